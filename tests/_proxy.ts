/** The fault-injecting relays, for the tests that run replicas as real processes. */
export { type Endpoint, FaultNetwork } from "../src/cli/relays.ts";
