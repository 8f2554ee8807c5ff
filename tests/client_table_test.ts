import { strict as assert } from "node:assert";
import { ClientTable } from "../src/vr/client_table.ts";
import type { LogEntry } from "../src/vr/message.ts";

function executed(opNumber: number, clientId: number, requestNumber: number): LogEntry {
  return {
    opNumber,
    viewNumber: 0,
    clientId,
    requestNumber,
    operation: new Uint8Array(),
    timestamp: 0,
  };
}

const result = (byte: number) => new Uint8Array([byte]);

Deno.test("§4.5 client table keeps each client's latest executed request and its result", () => {
  const table = new ClientTable(8);
  table.onExecute(executed(1, 7, 1), result(1), 0);
  table.onExecute(executed(2, 7, 2), result(2), 0x1234);
  assert.deepEqual(table.executed(7), {
    requestNumber: 2,
    opNumber: 2,
    operationChecksum: 0x1234,
    result: result(2),
  });
  // An older request executed late (it was in the log before a newer one) does not go back.
  table.onExecute(executed(3, 7, 1), result(3), 0);
  assert.deepEqual(table.executed(7), {
    requestNumber: 2,
    opNumber: 2,
    operationChecksum: 0x1234,
    result: result(2),
  });
  assert.equal(table.latestRequestNumber(7), 2);
});

Deno.test("§4.5 client table tracks requests in the log until they are executed", () => {
  const table = new ClientTable(8);
  table.onAppend(executed(1, 7, 5));
  assert.deepEqual(table.pending(7), { requestNumber: 5, opNumber: 1 });
  assert.equal(table.latestRequestNumber(7), 5);
  table.onExecute(executed(1, 7, 5), result(1), 0);
  assert.equal(table.pending(7), undefined);
  assert.equal(table.latestRequestNumber(7), 5);
});

Deno.test("§4.5 a full client table evicts the client whose latest execution is oldest", () => {
  const table = new ClientTable(3);
  table.onExecute(executed(1, 10, 1), result(1), 0);
  table.onExecute(executed(2, 20, 1), result(2), 0);
  table.onExecute(executed(3, 30, 1), result(3), 0);
  table.onExecute(executed(4, 10, 2), result(4), 0); // Client 10 is now the most recent.
  table.onExecute(executed(5, 40, 1), result(5), 0); // Full: evicts client 20 (op 2).
  assert.equal(table.size, 3);
  assert.equal(table.executed(20), undefined);
  for (const clientId of [10, 30, 40]) assert.ok(table.executed(clientId) !== undefined);
  table.onExecute(executed(6, 50, 1), result(6), 0); // Evicts client 30 (op 3).
  assert.equal(table.executed(30), undefined);
  assert.deepEqual([10, 40, 50].map((c) => table.executed(c)?.opNumber), [4, 5, 6]);
});

Deno.test("a full client table's floor is the largest request-number it evicted", () => {
  const table = new ClientTable(2);
  assert.equal(table.requestNumberFloor, 0);
  table.onExecute(executed(1, 10, 900), result(1), 0);
  table.onExecute(executed(2, 20, 5), result(2), 0);
  table.onExecute(executed(3, 30, 1), result(3), 0); // Evicts client 10 (op 1): floor 900.
  assert.equal(table.executed(10), undefined);
  assert.equal(table.requestNumberFloor, 900);
  table.onExecute(executed(4, 40, 1), result(4), 0); // Evicts client 20: 5 is below the floor.
  assert.equal(table.requestNumberFloor, 900);
});

Deno.test("§5.1 client table restored from its records equals the table it came from", () => {
  const table = new ClientTable(3);
  for (let op = 1; op <= 6; op++) table.onExecute(executed(op, 10 * op, 100 + op), result(op), op);
  const copy = new ClientTable(3);
  copy.restore(table.requestNumberFloor, [...table.records()].reverse());
  assert.equal(copy.digest(), table.digest());
  assert.ok(table.requestNumberFloor > 0, "some clients were evicted");
  // Eviction goes on the same way: by the oldest execution, whatever order the records came in.
  table.onExecute(executed(7, 70, 1), result(7), 7);
  copy.onExecute(executed(7, 70, 1), result(7), 7);
  assert.equal(copy.digest(), table.digest());
});
