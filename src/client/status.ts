/**
 * Ask one replica for its status over a status connection (hello role "status"): the replica
 * answers with one JSON frame.
 *
 * @module
 */
import type { Address } from "../config.ts";
import { Connection } from "../transport/connection.ts";
import { FRAME_BODY_BYTES_MAX } from "../transport/frame.ts";
import { connectTo, type TlsMaterial } from "../transport/tls.ts";
import {
  type ClusterIdentity,
  ConnectorHandshake,
  HANDSHAKE_BODY_BYTES_MAX,
  isHandshakeFrame,
} from "../transport/handshake.ts";
import type { ReplicaStatus } from "../transport/node.ts";

export const STATUS_TIMEOUT_MS_DEFAULT = 1000;

/** The replica's status, or an error text when it cannot be reached in time. */
export function fetchStatus(
  address: Address,
  timeoutMs = STATUS_TIMEOUT_MS_DEFAULT,
  options: {
    readonly digest?: boolean;
    readonly identity?: ClusterIdentity | undefined;
    readonly tls?: TlsMaterial | undefined;
  } = {},
): Promise<ReplicaStatus | { readonly error: string }> {
  return new Promise((resolve) => {
    let connection: Connection | undefined;
    let settled = false;
    const settle = (value: ReplicaStatus | { readonly error: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      connection?.close();
      resolve(value);
    };
    const timer = setTimeout(
      () => settle({ error: `no answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    connectTo(address.host, address.port, options.tls).then((conn) => {
      if (settled) {
        conn.close();
        return;
      }
      const opened = new Connection(conn, { frameBodyBytesMax: HANDSHAKE_BODY_BYTES_MAX });
      connection = opened;
      // For a status connection the hello's index asks for the state digest (1) or not (0).
      const handshake = new ConnectorHandshake(
        options.identity ?? { clusterId: "", key: undefined },
        "status",
        options.digest === true ? 1 : 0,
      );
      opened.send(handshake.hello);
      const ready = () => opened.setLimits({ frameBodyBytesMax: FRAME_BODY_BYTES_MAX });
      if (handshake.ready) ready();
      opened.start({
        onFrame: (body) => {
          if (isHandshakeFrame(body)) {
            handshake.onFrame(body).then((outcome) => {
              if ("error" in outcome) return settle({ error: outcome.error });
              opened.send(outcome.send);
              ready();
            }, (error) => settle({ error: `handshake failed: ${String(error)}` }));
            return;
          }
          try {
            settle(JSON.parse(new TextDecoder().decode(body)) as ReplicaStatus);
          } catch {
            settle({ error: "the answer is not a status" });
          }
        },
        onClose: (reason) => settle({ error: reason ?? "connection closed" }),
      });
    }).catch((error) => {
      settle({
        error: error instanceof Deno.errors.ConnectionRefused
          ? "connection refused"
          : String(error),
      });
    });
  });
}
