// Standard Webhooks signatures as senders' Node.js libraries make them (npm svix and
// standardwebhooks), for the Python interoperability tests.
// stdin: a JSON array of {"library": "svix" | "standardwebhooks", "secrets": ["whsec_..."],
// "msgId", "timestamp" (unix s), "payload" (a string, signed as one) or "payloadBase64" (bytes,
// signed as a Buffer), "names": "svix" | "webhook"};
// stdout: a JSON array of {"headers", "verified"}: the id, timestamp and signature headers under
// the names asked for, one library signature per secret (space-separated, as during a rotation),
// and whether the same library's own verify() accepts them with the first secret.
// One process for many signatures: starting node costs more than all the signing.
import { Webhook as StandardWebhook } from "standardwebhooks";
import { Webhook as SvixWebhook } from "svix";

const LIBRARIES = { svix: SvixWebhook, standardwebhooks: StandardWebhook };

function sign({ library, secrets, msgId, timestamp, payload, payloadBase64, names }) {
  const Webhook = LIBRARIES[library];
  const body = payloadBase64 === undefined ? payload : Buffer.from(payloadBase64, "base64");
  const when = new Date(timestamp * 1000);
  const signature = secrets
    .map((secret) => new Webhook(secret).sign(msgId, when, body))
    .join(" ");
  const headers = {
    [`${names}-id`]: msgId,
    [`${names}-timestamp`]: String(timestamp),
    [`${names}-signature`]: signature,
  };
  let verified = true;
  try {
    // standardwebhooks reads webhook-* only; svix reads either set. No JSON parse: bodies
    // may be binary.
    new Webhook(secrets[0]).verify(body, headers, { jsonParse: false });
  } catch {
    verified = false;
  }
  return { headers, verified };
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
process.stdout.write(JSON.stringify(JSON.parse(input).map(sign)));
