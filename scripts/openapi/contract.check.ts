/**
 * Type-checked by scripts/openapi/check.ts after it generated `generated/openapi.d.ts` from the server's OpenAPI
 * document: each response schema a generated client sees must be the very type the dashboard and the CLI use
 * (shared/src/api/types.ts), both ways. A field added to one and not the other fails here.
 */
import type { components, paths } from '../../generated/openapi.js';
import type * as Api from '#shared/api/types.js';

type Schemas = components['schemas'];
/** True only when A and B are assignable to each other. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

const errorBody: Same<Api.ErrorBodyJson, Schemas['ErrorBody']> = true;
const environment: Same<Api.Environment, Schemas['Environment']> = true;
const machine: Same<Api.Machine, Schemas['Machine']> = true;
const registrationToken: Same<Api.RegistrationToken, Schemas['RegistrationToken']> = true;
const registration: Same<Api.Registration, Schemas['Registration']> = true;
const healthCheck: Same<Api.HealthCheck, Schemas['HealthCheck']> = true;
const project: Same<Api.Project, Schemas['Project']> = true;
const channel: Same<Api.Channel, Schemas['Channel']> = true;
const deploymentProcess: Same<Api.DeploymentProcess, Schemas['DeploymentProcess']> = true;
const variables: Same<Api.Variables, Schemas['Variables']> = true;
const pkg: Same<Api.Package, Schemas['Package']> = true;
const release: Same<Api.Release, Schemas['Release']> = true;
const deployment: Same<Api.Deployment, Schemas['Deployment']> = true;
const deploymentSummary: Same<Api.DeploymentSummary, Schemas['DeploymentSummary']> = true;
const cancelAccepted: Same<Api.CancelAccepted, Schemas['CancelAccepted']> = true;
const steerAccepted: Same<Api.SteerAccepted, Schemas['SteerAccepted']> = true;
const preview: Same<Api.Preview, Schemas['Preview']> = true;
const logPage: Same<Api.LogPage, Schemas['LogPage']> = true;
const interruption: Same<Api.Interruption, Schemas['Interruption']> = true;
const apiKey: Same<Api.ApiKey, Schemas['ApiKey']> = true;
const apiKeyCreated: Same<Api.ApiKeyCreated, Schemas['ApiKeyCreated']> = true;
const me: Same<Api.Me, Schemas['Me']> = true;
const health: Same<Api.Health, Schemas['Health']> = true;
const ready: Same<Api.Ready, Schemas['Ready']> = true;

// The operations the dashboard and the CLI call answer with those schemas.
type Json<P extends keyof paths, M extends keyof paths[P], S extends number> = paths[P][M] extends {
  responses: { [K in S]: { content: { 'application/json': infer B } } };
}
  ? B
  : never;
const getDeployment: Same<Json<'/api/deployments/{id}', 'get', 200>, Api.Deployment> = true;
const listDeployments: Same<Json<'/api/deployments', 'get', 200>, Api.DeploymentSummary[]> = true;
const createDeployment: Same<Json<'/api/deployments', 'post', 201>, Api.Deployment> = true;
const readLog: Same<Json<'/api/deployments/{id}/log', 'get', 200>, Api.LogPage> = true;
const listMachines: Same<Json<'/api/machines', 'get', 200>, Api.Machine[]> = true;
const listInterruptions: Same<Json<'/api/interruptions', 'get', 200>, Api.Interruption[]> = true;
const createRelease: Same<Json<'/api/releases', 'post', 201>, Api.Release> = true;
const pause: Same<Json<'/api/deployments/{id}/pause', 'post', 202>, Api.SteerAccepted> = true;
const notFound: Same<Json<'/api/deployments/{id}', 'get', 404>, Api.ErrorBodyJson> = true;

export const checked = [
  errorBody,
  environment,
  machine,
  registrationToken,
  registration,
  healthCheck,
  project,
  channel,
  deploymentProcess,
  variables,
  pkg,
  release,
  deployment,
  deploymentSummary,
  cancelAccepted,
  steerAccepted,
  pause,
  preview,
  logPage,
  interruption,
  apiKey,
  apiKeyCreated,
  me,
  health,
  ready,
  getDeployment,
  listDeployments,
  createDeployment,
  readLog,
  listMachines,
  listInterruptions,
  createRelease,
  notFound,
];
