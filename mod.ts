/**
 * vstamp: Viewstamped Replication for TypeScript, as a library.
 *
 * What an embedder needs, and no more:
 * - **Your service**: implement `StateMachine` and describe it as an `App` (`defineApp`), or use
 *   `KvStore` / `kvApp`, the key-value store that ships with vstamp.
 * - **A replica in your program**: `ReplicaNode.start` with a configuration (`parseConfig`,
 *   `loadConfig`) and your state machine (behind `guardStateMachine`).
 * - **A client**: `Client` sends any app's operations; `KvClient` speaks to the key-value store.
 * - **Redis clients**: `RespGateway` serves the key-value store to any Redis client.
 * - **A check of your service**: `runSimulation` runs the real protocol with your app under
 *   crashes, partitions and disk faults, and compares every replica's state with a model.
 *
 * ## What a state machine must guarantee
 *
 * The protocol gives every replica the same operations in the same order with the same
 * `ApplyContext`; the states stay equal only if the machine keeps its side:
 * - **Determinism**: `apply`'s result and its change to the state depend only on the state, the
 *   operation and the context: no `Date.now()` (use `context.timestamp`, fixed by the primary),
 *   no `Math.random()`, no I/O, no iteration order that depends on history.
 * - **No throwing**: a malformed operation gives an error result, the same everywhere.
 *   `guardStateMachine` turns a throw into the result `error: apply threw: ...` so that a replica
 *   survives it, but whatever `apply` changed before it threw stays changed.
 * - **Snapshot/restore equivalence**: `restore(snapshot())` gives a state with the same digest
 *   and the same answers; equal states give equal snapshots and digests.
 *
 * The simulator checks all three: every replica's `digest()` is compared with a model, a fresh
 * machine from the same app applying the committed operations in order, after every step; every
 * reply is compared with the model's result; replicas restart from checkpoints and take state
 * transfers, so a snapshot that loses or reorders anything shows as a divergence.
 *
 * The pure protocol core (`src/vr/replica.ts`), for a transport of your own, is not part of this
 * API: import it from its module.
 *
 * @module
 */
export type {
  ApplyContext,
  SnapshotReader,
  SnapshotWriter,
  StateMachine,
} from "./src/app/state_machine.ts";
export {
  type App,
  type AppCommand,
  AppError,
  APPLY_THREW_PREFIX,
  appTag,
  defineApp,
  guardStateMachine,
  loadApp,
  type WorkloadOperation,
  type WorkloadRandom,
} from "./src/app/app.ts";
export { kvApp } from "./src/app/kv_app.ts";
export {
  BATCH_OPERATIONS_MAX,
  decodeKvBatchResult,
  decodeKvResult,
  encodeKvBatch,
  encodeKvOperation,
  formatKvResult,
  type KvErrorResult,
  type KvOperation,
  type KvResult,
  KvStore,
  type KvStoreOptions,
} from "./src/app/kv.ts";
export {
  runSimulation,
  type SimulationOptions,
  type SimulationResult,
  type SimulationStats,
} from "./src/sim/simulator.ts";
export { Client, ClientError, type ClientOptions, ClientTransport } from "./src/client/client.ts";
export { type KvBytes, KvClient, KvError } from "./src/client/kv_client.ts";
export { type GatewayOptions, RespGateway } from "./src/resp/gateway.ts";
export { type NodeOptions, ReplicaNode, type ReplicaStatus } from "./src/transport/node.ts";
export type { LogLevel } from "./src/vr/replica.ts";
export {
  type Address,
  type GroupAccess,
  loadAccess,
  loadConfig,
  loadIdentity,
  loadTls,
  parseConfig,
  type SecretSource,
  type ServerConfig,
} from "./src/config.ts";
export type { ClusterIdentity } from "./src/transport/handshake.ts";
export type { TlsMaterial } from "./src/transport/tls.ts";
