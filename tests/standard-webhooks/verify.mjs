// Verifies webhook deliveries with the Standard Webhooks reference library
// (npm `standardwebhooks`, pinned in package.json), as a target written in
// JavaScript would. Reads one JSON document on stdin:
//
//   {"secret": "<the signing secret, as configured in cronfence>",
//    "deliveries": [{"headers": {...}, "body_base64": "..."}, ...]}
//
// and prints one JSON array with, per delivery, {"ok": true} or
// {"ok": false, "error": "..."}. The library takes the secret as
// "whsec_" + base64 of its raw bytes (DESIGN §5).
import { Webhook } from "standardwebhooks";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const webhook = new Webhook("whsec_" + Buffer.from(input.secret, "utf8").toString("base64"));
const results = input.deliveries.map(({ headers, body_base64 }) => {
  try {
    webhook.verify(Buffer.from(body_base64, "base64"), headers, { jsonParse: false });
    return { ok: true };
  } catch (error) {
    return { ok: false, error: String(error.message ?? error) };
  }
});
process.stdout.write(JSON.stringify(results) + "\n");
