// GitHub's signature as @octokit/webhooks-methods computes and checks it, for the Python tests.
// stdin: a JSON array of {"op": "sign", "secret", "payload"} or
// {"op": "verify", "secret", "payload", "signature"}; stdout: a JSON array of the results
// (the X-Hub-Signature-256 value for sign, a boolean for verify). One process for many
// operations: starting node costs more than all the signing.
import { sign, verify } from "@octokit/webhooks-methods";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const op of JSON.parse(input)) {
  if (op.op === "sign") results.push(await sign(op.secret, op.payload));
  else if (op.op === "verify") results.push(await verify(op.secret, op.payload, op.signature));
  else throw new Error(`unknown op ${op.op}`);
}
process.stdout.write(JSON.stringify(results));
