/**
 * The `/metrics` endpoint over HTTP (`Deno.serve`), for Prometheus or `curl`. Only `GET /metrics`
 * is served; anything else gets a 404 (another path) or a 405 (another method) and one line of
 * text. Deno parses the HTTP, so malformed requests never reach us.
 *
 * @module
 */
import { PROMETHEUS_CONTENT_TYPE } from "../metrics/prometheus.ts";

export interface MetricsServer {
  /** The port it listens on (the one the kernel chose, for port 0). */
  readonly port: number;
  readonly hostname: string;
  close(): Promise<void>;
}

/**
 * Listens on `hostname:port` (0: any free port). `render` gives the page, or undefined while
 * there is nothing to show yet (the replica is still starting): a 503.
 */
export function serveMetrics(
  options: { readonly hostname: string; readonly port: number },
  render: () => string | undefined,
): MetricsServer {
  // Binds at once: a port in use throws here (Deno.errors.AddrInUse), before anything is served.
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    // Without it Deno prints its own "Listening on" line; the caller logs the port.
    onListen: () => {},
    onError: (error) => {
      // A bug in render must not stop the replica: one line in the answer instead.
      return new Response(`cannot render the metrics: ${String(error)}\n`, { status: 500 });
    },
  }, (request) => {
    const path = new URL(request.url).pathname;
    if (path !== "/metrics") {
      return new Response(`not found: ${path} (only /metrics is served)\n`, { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response(`method ${request.method} not allowed: use GET\n`, {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
    }
    const page = render();
    if (page === undefined) {
      return new Response("the replica is starting\n", { status: 503 });
    }
    return new Response(page, { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
  });
  return {
    port: server.addr.port,
    hostname: server.addr.hostname,
    close: () => server.shutdown(),
  };
}
