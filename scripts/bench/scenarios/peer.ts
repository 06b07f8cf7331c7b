/** The makespan job done by Ansible, for the peer comparison (run by makespan.ts, alternating with Cuttle). */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { payload } from '../harness.js';
import { say } from '../report.js';

/** Whether ansible-playbook runs, after installing it (apt-get) if it did not. */
export function ensureAnsible(): boolean {
  if (spawnSync('ansible-playbook', ['--version']).status === 0) return true;
  say('  installing ansible (apt-get install ansible) ...');
  spawnSync(
    'bash',
    ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ansible >/dev/null'],
    { stdio: 'inherit' },
  );
  return spawnSync('ansible-playbook', ['--version']).status === 0;
}

/** The same job with Ansible: one host per target with ansible_connection=local, serial W, forks W. Seconds. */
export async function ansible(n: number, w: number, o: { sizeMb: number; sleep: number }): Promise<number> {
  const t = mkdtempSync(join(tmpdir(), 'cuttle-ansible-'));
  try {
    const file = await payload(
      t,
      o.sizeMb,
      `#!/bin/sh\nsleep ${o.sleep}\necho "deployed $(date +%s.%N)" > "$PWD/DEPLOYED"\n`,
    );
    const hosts = Array.from({ length: n }, (_, i) => `h${String(i + 1).padStart(3, '0')}`);
    writeFileSync(
      join(t, 'inventory.ini'),
      `[targets]\n${hosts.join('\n')}\n[targets:vars]\nansible_connection=local\n`,
    );
    writeFileSync(
      join(t, 'ansible.cfg'),
      `[defaults]\ninventory = ${t}/inventory.ini\nforks = ${w}\ngathering = explicit\nhost_key_checking = False\ninterpreter_python = /usr/bin/python3\nretry_files_enabled = False\nlocal_tmp = ${t}/.ansible/tmp\nremote_tmp = ${t}/.ansible/rtmp\n`,
    );
    writeFileSync(
      join(t, 'deploy.yml'),
      `- hosts: targets\n  serial: ${w}\n  gather_facts: false\n  vars:\n    root: "${t}/targets/{{ inventory_hostname }}"\n    rel: "{{ root }}/releases/v1"\n  tasks:\n    - file: {path: "{{ rel }}", state: directory}\n    - copy: {src: "${file}", dest: "{{ root }}/releases/v1.tar.gz"}\n    - unarchive: {src: "{{ root }}/releases/v1.tar.gz", dest: "{{ rel }}", remote_src: true}\n    - command: {cmd: ./deploy.sh, chdir: "{{ rel }}"}\n`,
    );
    const t0 = performance.now();
    const r = spawnSync('ansible-playbook', ['deploy.yml'], {
      cwd: t,
      env: { ...process.env, ANSIBLE_CONFIG: join(t, 'ansible.cfg') },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    const s = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`ansible-playbook failed: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
    return s;
  } finally {
    rmSync(t, { recursive: true, force: true });
  }
}
