/**
 * The OpenAPI document users generate clients from: every operation has a summary, its response schema (from the
 * shared zod schemas of shared/src/api/types.ts, one definition for the server, the dashboard and the CLI) and its
 * error responses (the ErrorBody schema, with the codes each can carry). `Returns` decorates an operation;
 * `finishDocument` adds the schemas as components, the 401 and 403 of every route that needs a key, and the error codes
 * table.
 */
import { applyDecorators } from '@nestjs/common';
import { ApiOperation, ApiResponse, type OpenAPIObject } from '@nestjs/swagger';
import { z } from 'zod';
import { ERROR_STATUS, type ErrorCode } from '#shared/api/errors.js';
import { API_SCHEMAS, type ApiSchemaName } from '#shared/api/types.js';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/**
 * An operation's summary, its success response (`'Name'`, `['Name']` for a list, or null for no body) and the error
 * codes it may answer with besides 401 (added for every route that needs a key) and 400 (added when it takes input).
 */
export function Returns(
  summary: string,
  status: number,
  schema: ApiSchemaName | [ApiSchemaName] | null,
  errors: ErrorCode[] = [],
  description?: string,
) {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of errors) byStatus.set(ERROR_STATUS[code], [...(byStatus.get(ERROR_STATUS[code]) ?? []), code]);
  return applyDecorators(
    ApiOperation({ summary, ...(description ? { description } : {}) }),
    ApiResponse({
      status,
      description: summary,
      ...(schema ? { schema: Array.isArray(schema) ? { type: 'array', items: ref(schema[0]) } : ref(schema) } : {}),
    }),
    ...[...byStatus].map(([s, codes]) =>
      ApiResponse({ status: s, description: `error: ${codes.join(', ')}`, schema: ref('ErrorBody') }),
    ),
  );
}

/** A zod schema as an OpenAPI 3.0 schema object (zod's own converter, targeted at the document's version). */
export function openApiSchema(schema: z.ZodType, io: 'input' | 'output' = 'output'): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { target: 'openapi-3.0', unrepresentable: 'any', io }) as Record<string, unknown>;
  delete out.$schema;
  // A response may gain fields: clients generated from the document must accept them.
  if (io === 'output') openUp(out);
  return out;
}

function openUp(node: unknown) {
  if (Array.isArray(node)) return node.forEach(openUp);
  if (!node || typeof node !== 'object') return;
  const o = node as Record<string, unknown>;
  if (o.additionalProperties === false) delete o.additionalProperties;
  Object.values(o).forEach(openUp);
}

/** Completes the generated document (see the header). */
export function finishDocument(doc: OpenAPIObject): OpenAPIObject {
  doc.components ??= {};
  doc.components.schemas ??= {};
  for (const [name, schema] of Object.entries(API_SCHEMAS)) doc.components.schemas[name] = openApiSchema(schema);
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const op of Object.values(item) as Array<{
      security?: unknown[];
      responses?: Record<string, unknown>;
      requestBody?: unknown;
      parameters?: unknown[];
      'x-public'?: boolean;
    }>) {
      if (!op || typeof op !== 'object' || !op.responses) continue;
      const isPublic = !!op['x-public'];
      if (isPublic) {
        op.security = [];
        delete op['x-public'];
      }
      if (!isPublic) {
        op.responses['401'] ??= {
          description: 'error: unauthorized (no API key, or an unknown or revoked one)',
          content: { 'application/json': { schema: ref('ErrorBody') } },
        };
        // Every route with a key passes the permission table (server/src/auth/permissions.ts).
        op.responses['403'] ??= {
          description: "error: forbidden (the API key's role or scope does not allow this)",
          content: { 'application/json': { schema: ref('ErrorBody') } },
        };
      }
      if ((op.requestBody || op.parameters?.length || path.includes('{')) && !op.responses['400'])
        op.responses['400'] = {
          description: 'error: validation_failed (the message names the field)',
          content: { 'application/json': { schema: ref('ErrorBody') } },
        };
    }
  }
  doc.info.description =
    `${doc.info.description ?? ''}\n\nErrors are JSON \`{statusCode, error, code, message}\`; \`code\` is one of: ` +
    Object.entries(ERROR_STATUS)
      .map(([code, status]) => `\`${code}\` (${status})`)
      .join(', ') +
    '.';
  return doc;
}
