import { Global, Module, type DynamicModule } from '@nestjs/common';
import { CONFIG, type CuttleConfig } from './config/config.js';
import { LOGGER, type Logger } from './logging/logger.js';
import { LiveEvents } from './live/live-events.js';
import type { PkiMaterial } from './pki/pki.js';
import { SecretBox } from './secrets/secret-box.js';

export const PKI = Symbol('Pki');

/** What main.ts prepares before Nest starts (config, PKI, logger, the secrets key), made injectable everywhere. */
@Global()
@Module({})
export class CoreModule {
  static forRoot(values: {
    config: CuttleConfig;
    pki: PkiMaterial;
    logger: Logger;
    secrets: SecretBox;
  }): DynamicModule {
    const providers = [
      { provide: CONFIG, useValue: values.config },
      { provide: PKI, useValue: values.pki },
      { provide: LOGGER, useValue: values.logger },
      { provide: SecretBox, useValue: values.secrets },
    ];
    return {
      module: CoreModule,
      providers: [...providers, LiveEvents],
      exports: [...providers.map((p) => p.provide), LiveEvents],
    };
  }
}
