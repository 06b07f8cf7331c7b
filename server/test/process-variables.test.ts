/**
 * What a deployment runs with and where: variables and their scopes, sensitive values, output variables, action
 * conditions (environment, channel, disabled), the preview, and specific or excluded machines, observed with real
 * agents.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  makeTarGz,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let fleet: TestFleet;
let prod: string;
let test: string;
const ids: Record<string, string> = {};
const SECRET = 's3cr3t-Value-42';

beforeAll(async () => {
  srv = await startServer();
  prod = (await srv.must('POST', '/api/environments', { name: 'Prod' })).id;
  test = (await srv.must('POST', '/api/environments', { name: 'Test' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [prod, test],
    roles: ['web'],
    maxUses: 4,
  });
  fleet = startFleet(srv, { prefix: 'web', count: 4, roles: ['web'], environments: ['Prod', 'Test'], token });
  for (const m of await waitOnline(srv, fleet.names, 90_000)) ids[m.name] = m.id;
  // web-04 also has the role "db", for role-scoped variables and role targeting.
  await srv.must('PATCH', `/api/machines/${ids['web-04']}`, { roles: ['web', 'db'] });
}, 150_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

let n = 0;
const uniq = (s: string) => `${s} ${++n}`;
const lines = (log: any[], machine: string) => log.filter((e) => e.machineId === ids[machine]).map((e) => e.text);

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

describe('variables', () => {
  // The most specific scope wins (machine over role over environment over unscoped); `##{` escapes; an unknown
  // reference stays as written with a warning; system variables are set.
  it('substitutes scoped and system variables', async () => {
    const p = await createProject(srv, uniq('Vars'), [
      {
        name: 'Show',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Echo',
            type: 'script',
            script: [
              'echo "color=#{Color}"',
              'echo "literal=##{Color}"',
              'echo "unknown=#{No.Such.Var}"',
              'echo "sys=#{Cuttle.Project.Name}|#{Cuttle.Release.Number}|#{Cuttle.Environment.Name}|#{Cuttle.Machine.Name}|#{Cuttle.Machine.Roles}|#{Cuttle.Step.Name}|#{Cuttle.Action.Name}"',
              'echo "dep=#{Cuttle.Deployment.Id}"',
              'echo "nested=#{Greeting}"',
            ].join('\n'),
          },
        ],
      },
    ]);
    await srv.must('PUT', `/api/projects/${p.id}/variables`, {
      variables: [
        { name: 'Color', value: 'grey' },
        { name: 'Color', value: 'blue', scope: { environmentIds: [prod] } },
        { name: 'Color', value: 'green', scope: { roles: ['db'] } },
        { name: 'Color', value: 'red', scope: { machineIds: [ids['web-02']] } },
        { name: 'Color', value: 'never', scope: { environmentIds: [test] } },
        { name: 'Greeting', value: 'hello #{Cuttle.Machine.Name} in #{Color}' },
      ],
    });
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, prod, { version: '2.0.0' })).id);
    expect(d.state).toBe('success');
    const log = await srv.readLog(d.id);
    expect(lines(log, 'web-01')).toContain('color=blue');
    expect(lines(log, 'web-02')).toContain('color=red');
    expect(lines(log, 'web-04')).toContain('color=green');
    expect(lines(log, 'web-01')).toContain('literal=#{Color}');
    expect(lines(log, 'web-01')).toContain('unknown=#{No.Such.Var}');
    expect(lines(log, 'web-01')).toContain('Unknown variable #{No.Such.Var} is left as written');
    expect(lines(log, 'web-04')).toContain(`sys=${p.name}|2.0.0|Prod|web-04|web,db|Show|Echo`);
    expect(lines(log, 'web-03')).toContain(`dep=${d.id}`);
    expect(lines(log, 'web-03')).toContain('nested=hello web-03 in blue');
  });

  // A sensitive value reaches the script but never a log line, an API response or the agent's disk (beyond the
  // script while it runs); a client that sends the mask back keeps the stored value.
  it('masks sensitive values everywhere', async () => {
    const pkg = await makeTarGz(srv.dir, { 'deploy.sh': '#!/bin/bash\necho "installed into $PWD"\n' });
    await srv.must('POST', '/api/packages/vars-app/1.0.0', undefined, [201], {
      raw: pkg,
      headers: { 'content-type': 'application/gzip' },
    });
    const p = await createProject(srv, uniq('Secrets'), [
      {
        name: 'Use',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Install',
            type: 'package',
            packageId: 'vars-app',
            script: 'echo "dir=#{Cuttle.Package.InstallationDirectory}"',
          },
          {
            name: 'Leak',
            type: 'script',
            script: `echo "password is #{Db.Password}"\necho "#{Db.Password}" >&2\nprintf '%s' '#{Db.Password}' > ../secret-seen-by-script`,
          },
        ],
      },
    ]);
    const put = await srv.must('PUT', `/api/projects/${p.id}/variables`, {
      variables: [
        { name: 'Db.Password', value: SECRET, sensitive: true },
        { name: 'Plain', value: 'visible' },
      ],
    });
    expect(JSON.stringify(put)).not.toContain(SECRET);
    expect(put.variables[0].value).toBe('********');
    // Round trip: GET, change only the plain variable, PUT the masked secret back.
    const got = await srv.must('GET', `/api/projects/${p.id}/variables`);
    expect(JSON.stringify(got)).not.toContain(SECRET);
    got.variables[1].value = 'changed';
    await srv.must('PUT', `/api/projects/${p.id}/variables`, { variables: got.variables });

    const dep = await startDeployment(srv, p.id, prod, { deployment: { specificMachineIds: [ids['web-01']] } });
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('success');
    const log = await srv.readLog(d.id);
    expect(JSON.stringify(log)).not.toContain(SECRET);
    expect(lines(log, 'web-01')).toContain('password is ********');
    expect(lines(log, 'web-01')).toContain(`dir=${join(fleet.workDir('web-01'), 'vars-app', '1.0.0')}`);
    expect(readFileSync(join(fleet.home('web-01'), 'secret-seen-by-script'), 'utf8')).toBe(SECRET);
    const release = await srv.must('GET', `/api/releases/${d.releaseId}`);
    expect(JSON.stringify(release)).not.toContain(SECRET);
    expect(JSON.stringify(await srv.must('GET', `/api/deployments/${d.id}`))).not.toContain(SECRET);
    // Nothing the agent keeps (journal, identity, cache, work folders, temp scripts) holds the secret, except the
    // file this test's own script wrote on purpose.
    const leaks = filesUnder(fleet.home('web-01')).filter(
      (f) => !f.endsWith('secret-seen-by-script') && readFileSync(f).includes(SECRET),
    );
    expect(leaks).toEqual([]);
  });

  // Invalid variables are refused naming the field.
  it('refuses invalid variables', async () => {
    const p = await srv.must('POST', '/api/projects', { name: uniq('Bad vars') });
    const r = await srv.request('PUT', `/api/projects/${p.id}/variables`, {
      variables: [
        { name: 'ok', value: 'x' },
        { name: '1bad name', value: 'x' },
        { name: 'Cuttle.Mine', value: 'x' },
      ],
    });
    expect(r.status).toBe(400);
    expect(r.body.message).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^variables\[1\]\.name must start with a letter/),
        expect.stringMatching(/^variables\[2\]\.name names starting with "Cuttle\." are reserved/),
      ]),
    );
  });
});

describe('output variables', () => {
  // An output set on one step is read by the next step on the same machine, and by machine name from another.
  it('passes an output variable to later steps, by machine', async () => {
    const p = await createProject(srv, uniq('Outputs'), [
      {
        name: 'Build',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Stamp',
            type: 'script',
            script:
              'set_cuttle_variable BuildId "build-of-$CUTTLE_MACHINE_NAME"\nset_cuttle_variable Token "tok-$CUTTLE_MACHINE_NAME-secret" sensitive',
          },
          {
            name: 'SameLease',
            type: 'script',
            script: 'echo "same lease: #{Cuttle.Action[Build.Stamp].Output.BuildId}"',
          },
        ],
      },
      {
        name: 'Use',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Read',
            type: 'script',
            script:
              'echo "mine: #{Cuttle.Action[Build.Stamp].Output.BuildId}"\necho "web-01 says: #{Cuttle.Action[Build.Stamp].Output[web-01].BuildId}"\necho "token: #{Cuttle.Action[Build.Stamp].Output.Token}"',
          },
        ],
      },
    ]);
    const d = await srv.waitDeployment(
      (await startDeployment(srv, p.id, prod, { deployment: { specificMachineIds: [ids['web-01'], ids['web-02']] } }))
        .id,
    );
    expect(d.state).toBe('success');
    const log = await srv.readLog(d.id);
    expect(lines(log, 'web-02')).toEqual(
      expect.arrayContaining([
        'same lease: build-of-web-02',
        'mine: build-of-web-02',
        'web-01 says: build-of-web-01',
        'token: ********',
      ]),
    );
    expect(lines(log, 'web-01')).toContain('mine: build-of-web-01');
    expect(JSON.stringify(log)).not.toContain('-secret');
  });
});

describe('action conditions, preview and machine selection', () => {
  // Actions limited to environments and channels, or disabled, are skipped with the reason shown; the preview
  // tells the same without running anything.
  it('skips actions by environment, channel and disabled, and previews it', async () => {
    const p = await createProject(srv, uniq('Conditions'), [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: '50%',
        maxFailures: '25%',
        actions: [
          { name: 'Always', type: 'script', script: 'echo always-ran' },
          // Environments and channels may be named: stored as ids (an unknown one is refused, naming the field).
          { name: 'ProdOnly', type: 'script', environmentIds: ['Prod'], script: 'echo prod-only-ran' },
          { name: 'NotTest', type: 'script', excludedEnvironmentIds: [test], script: 'echo not-test-ran' },
          { name: 'Off', type: 'script', disabled: true, script: 'echo off-ran' },
          { name: 'Hotfix', type: 'script', channelIds: [], script: 'echo hotfix-ran' },
        ],
      },
      { name: 'Db', targetRoles: ['db'], actions: [{ name: 'Migrate', type: 'script', script: 'echo migrating' }] },
      { name: 'Cache', targetRoles: ['cache'], actions: [{ name: 'Flush', type: 'script', script: 'echo flush' }] },
      {
        name: 'Rollback',
        targetRoles: ['web'],
        condition: 'failure',
        actions: [{ name: 'Undo', type: 'script', script: 'echo undo' }],
      },
    ]);
    const hotfix = await srv.must('POST', `/api/projects/${p.id}/channels`, { name: 'Hotfix' });
    const proc = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
    proc.steps[0].actions[4].channelIds = ['Hotfix'];
    await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, { version: proc.version, steps: proc.steps });
    const saved = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
    expect([saved.steps[0].actions[1].environmentIds, saved.steps[0].actions[4].channelIds]).toEqual([
      [prod],
      [hotfix.id],
    ]);
    saved.steps[0].actions[1].environmentIds = ['Nowhere'];
    const unknown = await srv.request('PUT', `/api/projects/${p.id}/deployment-process`, {
      version: saved.version,
      steps: saved.steps,
    });
    expect([unknown.status, unknown.body.code, unknown.body.message]).toEqual([
      400,
      'unknown_reference',
      'steps[0].actions[1].environmentIds names an unknown environment "Nowhere"',
    ]);
    const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1.0.0' });

    const preview = await srv.must(
      'GET',
      `/api/deployments/preview?releaseId=${rel.id}&environmentId=${test}&excludedMachineIds=${ids['web-03']}`,
    );
    expect(preview.steps.map((s: any) => [s.name, s.willRun, s.skipReason])).toEqual([
      ['Web', true, undefined],
      ['Db', true, undefined],
      ['Cache', false, 'no targets with the role cache'],
      ['Rollback', false, 'condition: runs only if an earlier step failed'],
    ]);
    expect(preview.steps[0]).toMatchObject({ windowSize: 1, maxFailures: 0 });
    expect(preview.steps[0].targets.map((t: any) => t.machineName)).toEqual(['web-01', 'web-02', 'web-04']);
    expect(preview.steps[1].targets.map((t: any) => t.machineName)).toEqual(['web-04']);
    expect(preview.steps[0].actions.map((a: any) => [a.name, a.willRun, a.skipReason?.split(':')[0]])).toEqual([
      ['Always', true, undefined],
      ['ProdOnly', false, 'environment'],
      ['NotTest', false, 'environment'],
      ['Off', false, 'disabled'],
      ['Hotfix', false, 'channel'],
    ]);
    const bad = await srv.request('GET', `/api/deployments/preview?releaseId=${rel.id}`);
    expect(bad.status).toBe(400);
    expect(bad.body.message).toBe('environmentId is required');

    const d = await srv.waitDeployment(
      (
        await srv.must('POST', '/api/deployments', {
          releaseId: rel.id,
          environmentId: test,
          excludedMachineIds: [ids['web-03']],
        })
      ).id,
    );
    expect(d.state).toBe('success');
    expect(d.steps[0].targets.map((t: any) => t.machineName)).toEqual(['web-01', 'web-02', 'web-04']);
    expect(d.steps[0].targets[0].actions.map((a: any) => a.state)).toEqual([
      'success',
      'skipped',
      'skipped',
      'skipped',
      'skipped',
    ]);
    expect(d.steps.map((s: any) => s.state)).toEqual(['success', 'success', 'skipped', 'skipped']);
    const log = await srv.readLog(d.id);
    const text = log.map((e: any) => e.text);
    expect(text).toContain('always-ran');
    for (const never of ['prod-only-ran', 'not-test-ran', 'off-ran', 'hotfix-ran']) expect(text).not.toContain(never);
    expect(text).toEqual(
      expect.arrayContaining([
        'Action Off will be skipped: disabled',
        'Action ProdOnly will be skipped: environment: limited to other environments',
      ]),
    );
    expect(log.some((e: any) => e.machineId === ids['web-03'])).toBe(false);

    // The same process on the Hotfix channel in Prod runs the channel and Prod actions.
    const rel2 = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1.0.1', channelId: hotfix.id });
    const d2 = await srv.waitDeployment(
      (
        await srv.must('POST', '/api/deployments', {
          releaseId: rel2.id,
          environmentId: prod,
          specificMachineIds: [ids['web-01']],
        })
      ).id,
    );
    expect(d2.state).toBe('success');
    const text2 = (await srv.readLog(d2.id)).map((e: any) => e.text);
    expect(text2).toEqual(expect.arrayContaining(['always-ran', 'prod-only-ran', 'not-test-ran', 'hotfix-ran']));
    expect(text2).not.toContain('off-ran');
    expect(d2.steps[0].targets.map((t: any) => t.machineName)).toEqual(['web-01']);
  });

  // Bad machine selections are refused naming the field.
  it('refuses unknown machines in a selection', async () => {
    const p = await createProject(srv, uniq('Select'), [
      { name: 'S', targetRoles: ['web'], actions: [{ name: 'a', type: 'script', script: 'true' }] },
    ]);
    const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1' });
    const r = await srv.request('POST', '/api/deployments', {
      releaseId: rel.id,
      environmentId: prod,
      specificMachineIds: ['nope'],
    });
    expect(r.status).toBe(400);
    expect(r.body.message).toBe('specificMachineIds names an unknown machine "nope"');
  });
});
