/**
 * Ask one replica for its status over a status connection (hello role "status"): the replica
 * answers with one JSON frame.
 *
 * @module
 */
import type { Address } from "../config.ts";
import { Connection, encodeHello } from "../transport/connection.ts";
import type { ReplicaStatus } from "../transport/node.ts";

export const STATUS_TIMEOUT_MS_DEFAULT = 1000;

/** The replica's status, or an error text when it cannot be reached in time. */
export function fetchStatus(
  address: Address,
  timeoutMs = STATUS_TIMEOUT_MS_DEFAULT,
  options: { readonly digest?: boolean } = {},
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
    Deno.connect({ hostname: address.host, port: address.port }).then((conn) => {
      if (settled) {
        conn.close();
        return;
      }
      connection = new Connection(conn);
      // For a status connection the hello's index asks for the state digest (1) or not (0).
      connection.send(encodeHello({ role: "status", index: options.digest === true ? 1 : 0 }));
      connection.start({
        onFrame: (body) => {
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
