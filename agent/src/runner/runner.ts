/**
 * What runs a lease's actions on the machine. `processRunner` is the agent's: bash in its own process group, packages
 * unpacked into the work folder. The fleet can choose the hollow runner instead (runner/hollow.ts, a measuring
 * instrument); `run` cannot: main.ts never names it.
 */
import { runScript, type RunScriptOptions, type RunScriptResult } from './process-group.js';

export interface Runner {
  /** 'process': scripts run, packages are unpacked; 'hollow': nothing is started or unpacked. */
  readonly kind: 'process' | 'hollow';
  /** Runs one script: its output lines through `o.onLine`, its end as the result. */
  runScript(o: RunScriptOptions): Promise<RunScriptResult>;
  /**
   * Whether a package action unpacks its archive (and runs deploy.sh, substitutes files and runs the action's script)
   * after the download and verification; a prefetch then unpacks ahead too.
   */
  readonly unpacksPackages: boolean;
}

export const processRunner: Runner = { kind: 'process', runScript, unpacksPackages: true };
