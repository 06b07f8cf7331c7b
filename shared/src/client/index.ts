/**
 * A small REST client for Cuttle's API (docs/api.md), used by the demo and the CLI; responses are typed with
 * shared/src/api/types.ts. TLS is verified against the server's CA when one is given (the CA certificate is at
 * $CUTTLE_HOME/pki/ca.crt).
 */
import { request } from 'node:https';
import { ApiError } from '../api/api-error.js';

export { ApiError } from '../api/api-error.js';

export class CuttleClient {
  constructor(
    readonly baseUrl: string,
    private readonly apiKey: string | undefined,
    private readonly ca?: string,
  ) {}

  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    raw?: { data: Buffer; contentType: string },
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.apiKey) headers['x-api-key'] = this.apiKey;
    let data: Buffer | undefined;
    if (raw) {
      data = raw.data;
      headers['content-type'] = raw.contentType;
    } else if (body !== undefined) {
      data = Buffer.from(JSON.stringify(body));
      headers['content-type'] = 'application/json';
    }
    if (data) headers['content-length'] = String(data.length);
    const url = new URL(path, this.baseUrl);
    const send = () =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = request(url, { method, headers, ...(this.ca ? { ca: this.ca } : {}), timeout: 60_000 }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        });
        req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
        req.on('error', reject);
        req.end(data);
      });
    // A kept-alive connection the server closes just as a request leaves it fails with ECONNRESET before the server
    // read anything; a GET is safe to send again on a new connection.
    const { status, text } = await send().catch((e: NodeJS.ErrnoException) => {
      if (method === 'GET' && e.code === 'ECONNRESET') return send();
      throw e;
    });
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = text;
    }
    if (status >= 400) throw ApiError.from(status, json, text, `${method} ${path}: ${status} `);
    return json as T;
  }

  get<T = unknown>(path: string) {
    return this.request<T>('GET', path);
  }
  post<T = unknown>(path: string, body?: unknown) {
    return this.request<T>('POST', path, body);
  }
  put<T = unknown>(path: string, body?: unknown) {
    return this.request<T>('PUT', path, body);
  }
}
