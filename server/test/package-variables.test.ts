/**
 * Variables reach the package: `substituteInFiles` replaces `#{Name}` in the package's matching files after unpacking
 * (per environment, sensitive values included, never logged), and every script and deploy.sh can call
 * `get_cuttle_variable NAME`. Real agents, real tarballs, on the database the suite runs on.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  makeTarGz,
  startAgent,
  startServer,
  stopAll,
  waitOnline,
  type TestAgent,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let dev: string;
let prod: string;
const agents: Record<string, TestAgent> = {};
const ids: Record<string, string> = {};
const DEV_SECRET = 'dev-Pa55-w0rd-17';
const PROD_SECRET = 'prod-Pa55-w0rd-99';

beforeAll(async () => {
  srv = await startServer();
  dev = (await srv.must('POST', '/api/environments', { name: 'Dev' })).id;
  prod = (await srv.must('POST', '/api/environments', { name: 'Prod' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [dev, prod],
    roles: ['web'],
    maxUses: 2,
  });
  agents['dev-01'] = startAgent(srv, { name: 'dev-01', roles: ['web'], environments: ['Dev'], token });
  agents['prod-01'] = startAgent(srv, { name: 'prod-01', roles: ['web'], environments: ['Prod'], token });
  for (const m of await waitOnline(srv, Object.keys(agents), 90_000)) ids[m.name] = m.id;
}, 150_000);

afterAll(async () => {
  for (const a of Object.values(agents)) await a.stop();
  await srv?.stop();
  await stopAll();
});

const CONF = [
  'host=#{DbHost}',
  'password=#{DbPassword}',
  'machine=#{Cuttle.Machine.Name}',
  'missing=#{No.Such.Var}',
  'literal=##{DbHost}',
  '',
].join('\n');

const DEPLOY_SH = [
  '#!/bin/bash',
  'echo "deploy.sh host=$(get_cuttle_variable DbHost)"',
  'echo "deploy.sh env=$(get_cuttle_variable Cuttle.Environment.Name) machine=$(get_cuttle_variable Cuttle.Machine.Name)"',
  'echo "deploy.sh password=$(get_cuttle_variable DbPassword)"',
  'get_cuttle_variable DbPassword > ../password-seen-by-deploy-sh',
  'get_cuttle_variable No.Such.Var; echo "missing rc=$?"',
  '',
].join('\n');

/** The agent's private script folder in memory (see agent/src/identity.ts): where the variables file lives. */
function memoryScriptDir(home: string) {
  return join(
    '/dev/shm',
    `cuttle-agent-${process.getuid!()}-${createHash('sha256').update(home).digest('hex').slice(0, 16)}`,
  );
}

describe('variables inside packages', () => {
  // The same package deployed to two environments: each machine's config file holds its environment's values (the
  // sensitive one too), an unknown name stays as written with a warning, `##{` is a literal, files not named by a
  // glob are left alone; deploy.sh and the action's script read variables with get_cuttle_variable (project, system
  // and output variables); no log line holds a sensitive value, and the variables file is gone after the action.
  it('substitutes per environment, reads variables in deploy.sh, logs no secret', async () => {
    const pkg = await makeTarGz(srv.dir, {
      'config/app.conf': CONF,
      'config/untouched.txt': 'host=#{DbHost}\n',
      'deploy.sh': DEPLOY_SH,
    });
    await srv.must('POST', '/api/packages/site/1.0.0', undefined, [201], {
      raw: pkg,
      headers: { 'content-type': 'application/gzip' },
    });
    const p = await createProject(srv, 'Site', [
      {
        name: 'Deploy',
        targetRoles: ['web'],
        actions: [
          { name: 'Prepare', type: 'script', script: 'set_cuttle_variable Token tok-123' },
          {
            name: 'Install',
            type: 'package',
            packageId: 'site',
            substituteInFiles: ['config/*.conf'],
            script: 'echo "script token=$(get_cuttle_variable "Cuttle.Action[Deploy.Prepare].Output.Token")"',
          },
        ],
      },
    ]);
    await srv.must('PUT', `/api/projects/${p.id}/variables`, {
      variables: [
        { name: 'DbHost', value: 'db.dev.internal', scope: { environmentIds: [dev] } },
        { name: 'DbHost', value: 'db.prod.internal', scope: { environmentIds: [prod] } },
        { name: 'DbPassword', value: DEV_SECRET, sensitive: true, scope: { environmentIds: [dev] } },
        { name: 'DbPassword', value: PROD_SECRET, sensitive: true, scope: { environmentIds: [prod] } },
      ],
    });
    const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1.0.0' });
    const results: Record<string, any> = {};
    for (const [env, machine] of [
      [dev, 'dev-01'],
      [prod, 'prod-01'],
    ]) {
      const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: env });
      results[machine] = await srv.waitDeployment(dep.id);
      expect(results[machine].state).toBe('success');
    }

    const dir = (m: string) => join(agents[m].workDir, 'site', '1.0.0');
    const devConf = readFileSync(join(dir('dev-01'), 'config', 'app.conf'), 'utf8');
    const prodConf = readFileSync(join(dir('prod-01'), 'config', 'app.conf'), 'utf8');
    expect(devConf).toBe(
      `host=db.dev.internal\npassword=${DEV_SECRET}\nmachine=dev-01\nmissing=#{No.Such.Var}\nliteral=#{DbHost}\n`,
    );
    expect(prodConf).toBe(
      `host=db.prod.internal\npassword=${PROD_SECRET}\nmachine=prod-01\nmissing=#{No.Such.Var}\nliteral=#{DbHost}\n`,
    );
    expect(readFileSync(join(dir('dev-01'), 'config', 'untouched.txt'), 'utf8')).toBe('host=#{DbHost}\n');
    // get_cuttle_variable printed the sensitive value itself to deploy.sh.
    expect(readFileSync(join(agents['dev-01'].workDir, 'site', 'password-seen-by-deploy-sh'), 'utf8')).toBe(
      `${DEV_SECRET}\n`,
    );

    for (const [machine, host, env] of [
      ['dev-01', 'db.dev.internal', 'Dev'],
      ['prod-01', 'db.prod.internal', 'Prod'],
    ]) {
      const log = await srv.readLog(results[machine].id);
      const text = log.map((e: any) => e.text);
      expect(JSON.stringify(log)).not.toContain(DEV_SECRET);
      expect(JSON.stringify(log)).not.toContain(PROD_SECRET);
      expect(text).toContain('Substituted variables in config/app.conf');
      expect(text).toContain('Unknown variable #{No.Such.Var} in config/app.conf is left as written');
      expect(text).toContain(`deploy.sh host=${host}`);
      expect(text).toContain(`deploy.sh env=${env} machine=${machine}`);
      expect(text).toContain('deploy.sh password=********');
      expect(text).toContain('get_cuttle_variable: unknown variable No.Such.Var');
      expect(text).toContain('missing rc=1');
      expect(text).toContain('script token=tok-123');
      expect(text.some((t: string) => t.includes('untouched.txt'))).toBe(false);
      // The variables file of each script is removed when the script ends.
      const shm = memoryScriptDir(agents[machine].home);
      const left = existsSync(shm) ? readdirSync(shm).filter((f) => f.startsWith('script-vars-')) : [];
      expect(left).toEqual([]);
    }
  });

  // A glob that could name something outside the package, or on an action that has no package, is refused when the
  // process is saved, naming the field.
  it('refuses globs that leave the package', async () => {
    const p = await srv.must('POST', '/api/projects', { name: 'Bad globs' });
    const put = (actions: unknown[]) =>
      srv.request('PUT', `/api/projects/${p.id}/deployment-process`, {
        version: 1,
        steps: [{ name: 'S', targetRoles: ['web'], actions }],
      });
    const cases: Array<[unknown, string]> = [
      [['../etc/*.conf'], 'steps[0].actions[0].substituteInFiles[0] must stay inside the package'],
      [['config/../../x'], 'steps[0].actions[0].substituteInFiles[0] must stay inside the package'],
      [['/etc/passwd'], 'steps[0].actions[0].substituteInFiles[0] must be relative to the package root'],
      ['config/*.conf', 'steps[0].actions[0].substituteInFiles must be a list of globs'],
      [Array.from({ length: 101 }, (_, i) => `f${i}`), 'steps[0].actions[0].substituteInFiles must have at most 100'],
    ];
    for (const [globs, message] of cases) {
      const r = await put([{ name: 'A', type: 'package', packageId: 'site', substituteInFiles: globs }]);
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body.message)).toContain(message);
    }
    const r = await put([{ name: 'A', type: 'script', script: 'true', substituteInFiles: ['a.conf'] }]);
    expect(r.status).toBe(400);
    expect(JSON.stringify(r.body.message)).toContain(
      'steps[0].actions[0].substituteInFiles applies to package actions only',
    );
  });
});
