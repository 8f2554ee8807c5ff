/**
 * A one-replica group in this process (a `ReplicaNode` on a port the kernel picked, with a fresh
 * data directory), for tests of what a live replica does at its edges: clients, connection
 * limits, disk faults.
 *
 * @module
 */
import { KvStore } from "../src/app/kv.ts";
import { parseConfig, renderConfig } from "../src/config.ts";
import { type NodeOptions, ReplicaNode } from "../src/transport/node.ts";

export interface LiveNode {
  readonly node: ReplicaNode;
  /** "127.0.0.1:port". */
  readonly address: string;
  readonly port: number;
  readonly dataDir: string;
  readonly clusterId: string;
  /** The lines the node logged, as "level text", debug lines left out. */
  readonly lines: string[];
}

/** Runs `body` with a live one-replica group, closed and removed afterwards whatever happens. */
export async function withNode(
  options: Pick<Partial<NodeOptions>, "connectionLimits" | "injectFault" | "onFatal">,
  body: (live: LiveNode) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const address = `127.0.0.1:${port}`;
  const dataDir = await Deno.makeTempDir({ prefix: "vstamp_node_test_" });
  const lines: string[] = [];
  const config = parseConfig(renderConfig([address]), "test.yaml");
  const node = await ReplicaNode.start({
    ...options,
    config,
    index: 0,
    dataDir,
    sync: "none",
    app: new KvStore(),
    listener,
    log: (level, text) => {
      if (level !== "debug") lines.push(`${level} ${text}`);
    },
  });
  try {
    await body({ node, address, port, dataDir, clusterId: config.clusterId, lines });
  } finally {
    await node.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}
