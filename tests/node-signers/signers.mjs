// Tokens as senders' Node.js libraries make them, for the Python interoperability tests.
// stdin: a JSON array of {"library": "jose" | "jsonwebtoken", "alg", "kid", "claims"};
// stdout: a JSON array of {"token", "jwks"}: the compact JWS the library signed with a key it
// generated, and the public key as exported for a JWKS (jose's exportJWK; for jsonwebtoken,
// Node's KeyObject.export({format: "jwk"}), which its users publish). One process for many
// tokens: starting node costs more than all the signing.
import { generateKeyPairSync } from "node:crypto";
import * as jose from "jose";
import jsonwebtoken from "jsonwebtoken";

const CURVES = { ES256: "P-256", ES384: "P-384", ES512: "P-521" };

async function withJose({ alg, kid, claims }) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { modulusLength: 2048 });
  const header = kid ? { alg, kid } : { alg };
  const token = await new jose.SignJWT(claims).setProtectedHeader(header).sign(privateKey);
  const jwk = await jose.exportJWK(publicKey);
  if (kid) jwk.kid = kid;
  return { token, jwks: { keys: [jwk] } };
}

function nodeKeyPair(alg) {
  if (alg.startsWith("RS")) return generateKeyPairSync("rsa", { modulusLength: 2048 });
  if (alg.startsWith("PS")) return generateKeyPairSync("rsa", { modulusLength: 2048 });
  if (alg === "EdDSA") return generateKeyPairSync("ed25519");
  return generateKeyPairSync("ec", { namedCurve: CURVES[alg] });
}

function withJsonwebtoken({ alg, kid, claims }) {
  const { publicKey, privateKey } = nodeKeyPair(alg);
  const options = kid ? { algorithm: alg, keyid: kid } : { algorithm: alg };
  const token = jsonwebtoken.sign(claims, privateKey, options);
  const jwk = publicKey.export({ format: "jwk" });
  if (kid) jwk.kid = kid;
  return { token, jwks: { keys: [jwk] } };
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const op of JSON.parse(input)) {
  results.push(op.library === "jose" ? await withJose(op) : withJsonwebtoken(op));
}
process.stdout.write(JSON.stringify(results));
