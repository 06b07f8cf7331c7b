import { EventEmitter } from 'node:events';
import { Injectable } from '@nestjs/common';

/** In-process change notices for the dashboard's live channel, raised where the change is written. */
@Injectable()
export class LiveEvents extends EventEmitter<{ deployment: [deploymentId: string]; machines: [] }> {}
