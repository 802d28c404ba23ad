/**
 * @flex-bridge/client: keep a Flex agent's UI in step with flex-bridge.
 *
 * - `acceptDecision(item)`: the accept guard's core, a pure function of a reservation's item;
 * - `watchWorkerChannel(syncClient, workerSid, onChange)`: the worker's Sync map, in order;
 * - `createBridgeClient({ baseUrl, getToken })`: the bridge's `/flex` API;
 * - `installFlexBridge(flex, manager, options)`: all of it wired into Flex UI 2.x.
 *
 * `EmulatorSyncClient` (also at `@flex-bridge/client/emulator`) stands in for twilio-sync's
 * `SyncClient` against `flex-bridge emulator`, for local development without Twilio.
 */
export {
  OPS,
  acceptDecision,
  failureMessage,
  indication,
  isAhead,
  isReservationItem,
  isRinging,
  workerMapName,
} from './item.js';
export type { Decision, ItemError, Op, Phase, ReservationItem, ReservationStatus } from './item.js';
export type {
  Listener,
  MapEvent,
  OpenMode,
  SyncClientLike,
  SyncMapItemLike,
  SyncMapLike,
  SyncPaginatorLike,
} from './sync.js';
export { watchWorkerChannel } from './watcher.js';
export type { ChannelListener, ChannelWatcher, PendingWatcher, WatchOptions } from './watcher.js';
export {
  BadGatewayError,
  BadRequestError,
  BridgeError,
  BridgeTimeoutError,
  BridgeUnreachableError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  PayloadTooLargeError,
  UnauthorizedError,
  UnavailableError,
  UnprocessableError,
  UnsupportedMediaTypeError,
  createBridgeClient,
} from './bridge.js';
export type {
  ActionOptions,
  ActionResult,
  AttributesResult,
  BridgeClient,
  BridgeClientOptions,
  Intent,
  Params,
} from './bridge.js';
export { installFlexBridge } from './flex.js';
export type {
  AcceptTaskPayload,
  FlexBridgeHandle,
  FlexBridgeOptions,
  FlexLike,
  FlexTaskLike,
  ManagerLike,
} from './flex.js';
export { EmulatorSyncClient, EmulatorSyncError } from './emulator.js';
export type { EmulatorSyncClientOptions } from './emulator.js';
