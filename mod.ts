/**
 * vstamp: Viewstamped Replication for TypeScript.
 *
 * The protocol core (`Replica`) is pure: drive it with messages, ticks and persistence
 * completions, and carry out the effects it returns. `StateMachine` is the interface of the
 * service it replicates; `KvStore` is the key-value store that ships with it.
 *
 * @module
 */
export {
  type DurableState,
  type Effect,
  type LogLevel,
  Replica,
  type ReplicaOptions,
  type Status,
  type Superblock,
} from "./src/vr/replica.ts";
export type * from "./src/vr/message.ts";
export {
  type Limits,
  LIMITS_DEFAULT,
  TICK_MS,
  type Timing,
  TIMING_DEFAULT,
} from "./src/vr/constants.ts";
export type { ApplyContext, StateMachine } from "./src/app/state_machine.ts";
export {
  BATCH_OPERATIONS_MAX,
  BATCH_RESULT_BYTES_MAX,
  decodeKvBatch,
  decodeKvBatchResult,
  decodeKvOperation,
  decodeKvResult,
  encodeKvBatch,
  encodeKvOperation,
  encodeKvResult,
  formatKvResult,
  type KvOperation,
  type KvResult,
  KvStore,
} from "./src/app/kv.ts";
export {
  runSimulation,
  type SimulationOptions,
  type SimulationResult,
} from "./src/sim/simulator.ts";
export {
  checkLinearizable,
  type HistoryOperation,
  type LinearizabilityResult,
} from "./src/sim/linearizability.ts";
export { Client, ClientError, type ClientOptions, ClientTransport } from "./src/client/client.ts";
export { type KvBytes, KvClient, KvError } from "./src/client/kv_client.ts";
export { type GatewayOptions, RespGateway } from "./src/resp/gateway.ts";
export { type RespCommand, type RespLimits, RespParser } from "./src/resp/parser.ts";
export {
  CONNECTION_LIMITS_DEFAULT,
  type ConnectionLimits,
  type NodeOptions,
  ReplicaNode,
  type ReplicaStatus,
} from "./src/transport/node.ts";
export { loadConfig, loadIdentity, loadTls, parseConfig, type ServerConfig } from "./src/config.ts";
export type { ClusterIdentity } from "./src/transport/handshake.ts";
export type { TlsMaterial } from "./src/transport/tls.ts";
