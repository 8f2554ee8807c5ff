/**
 * Optional TLS for every connection of a group (replica links, clients, status): the replicas
 * listen with `Deno.listenTls` and every connector verifies the replica's certificate against the
 * group's CA with `Deno.connectTls`. The cluster secret (`handshake.ts`) still authenticates the
 * replicas to each other; TLS adds encryption and proves to clients that they reached the group.
 *
 * @module
 */

/** What a process needs to speak TLS with a group. */
export interface TlsMaterial {
  /** PEM certificate chain and key of this replica (replicas only). */
  readonly cert?: string | undefined;
  /** The PEM private key of `cert`. */
  readonly key?: string | undefined;
  /** PEM certificates of the CA that signed the replicas' certificates. */
  readonly caCerts: readonly string[];
}

/** Connect to a replica: plain TCP, or TLS verified against the group's CA. */
export async function connectTo(
  host: string,
  port: number,
  tls: TlsMaterial | undefined,
): Promise<Deno.Conn> {
  if (tls === undefined) {
    const conn = await Deno.connect({ hostname: host, port });
    noDelay(conn);
    return conn;
  }
  // TLS over a TCP connection made first, so that Nagle's algorithm can be turned off on it:
  // Deno's TLS connections have no setNoDelay, and with it on, small writes wait for the
  // peer's delayed acknowledgement (40 ms).
  const tcp = await Deno.connect({ hostname: host, port });
  noDelay(tcp);
  const conn = await Deno.startTls(tcp, { hostname: host, caCerts: [...tls.caCerts] });
  await conn.handshake();
  return conn;
}

/** Listen as a replica: plain TCP, or TLS with this replica's certificate. */
export function listenOn(host: string, port: number, tls: TlsMaterial | undefined): Deno.Listener {
  if (tls === undefined) return Deno.listen({ hostname: host, port });
  if (tls.cert === undefined || tls.key === undefined) {
    throw new Error("TLS needs this replica's certificate and key (tls_cert_file, tls_key_file)");
  }
  return Deno.listenTls({ hostname: host, port, cert: tls.cert, key: tls.key });
}

/** Disable Nagle's algorithm where the connection supports it: latency matters more. */
export function noDelay(conn: Deno.Conn): void {
  try {
    (conn as Partial<Deno.TcpConn>).setNoDelay?.(true);
  } catch {
    // Not every platform or connection supports it; only latency suffers.
  }
}
