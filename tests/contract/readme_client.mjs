#!/usr/bin/env node
/*
 * readme_client.mjs - a generated TypeScript client must accept the README's
 * own requests.
 *
 *   node readme_client.mjs [--spec FILE] [--readme FILE]
 *
 * Generates the types of api/openapi.yaml with openapi-typescript (default
 * options, as a user would), takes every JSON body the README sends with
 * curl -d to a job (POST /jobs creates, PATCH /jobs/{name} merge-patches),
 * writes each as a constant of the generated request-body type, and compiles
 * the lot with tsc --strict --noEmit. A few bodies the API refuses are
 * compiled too, each under @ts-expect-error, so that a type grown too loose
 * (any, all optional) fails as well. Exits 1 when tsc reports anything or
 * the README has no such body, 2 on bad usage. Writes only to a temporary
 * folder, removed at the end.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import openapiTS, { astToString } from "openapi-typescript";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = { spec: path.join(HERE, "..", "..", "api", "openapi.yaml"),
               readme: path.join(HERE, "..", "..", "README.md") };
for (let i = 2; i < process.argv.length; i += 2) {
    const flag = process.argv[i].replace(/^--/, "");
    if (!(flag in args) || process.argv[i + 1] === undefined) {
        process.stderr.write("usage: node readme_client.mjs [--spec FILE] [--readme FILE]\n");
        process.exit(2);
    }
    args[flag] = path.resolve(process.argv[i + 1]);
}

/*
 * The README's curl commands that send a JSON body to a job: [{method, body,
 * line}]. A command spans the lines ending in a backslash and, inside -d '...',
 * the lines up to the closing quote.
 */
function readmeRequests(text) {
    const found = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
        if (!/^\s*curl\b/.test(lines[i]))
            continue;
        let command = lines[i];
        const first = i;
        while ((/\\$/.test(command) || (command.split("'").length - 1) % 2 === 1) &&
               i + 1 < lines.length)
            command = command.replace(/\\$/, "") + "\n" + lines[++i];
        const data = /\s-d\s+'([^']*)'/.exec(command);
        const target = /(?:\$API|\/api\/v1)\/jobs(\/[a-z0-9._-]+)?(?=[\s"'])/.exec(command);
        if (!data || !target)
            continue;
        const method = /-X\s+(\w+)/.exec(command)?.[1] ?? "POST";
        found.push({ method, body: JSON.parse(data[1]), line: first + 1, named: !!target[1] });
    }
    return found;
}

const requests = readmeRequests(readFileSync(args.readme, "utf8"));
const creations = requests.filter((r) => r.method === "POST" && !r.named);
if (creations.length === 0) {
    process.stderr.write(`${args.readme}: no curl that creates a job (POST .../jobs -d '...')\n`);
    process.exit(1);
}

const work = mkdtempSync(path.join(os.tmpdir(), "cronfence-client-"));
let status = 0;
try {
    const ast = await openapiTS(pathToFileURL(args.spec));
    writeFileSync(path.join(work, "api.d.ts"), astToString(ast));
    const out = [
        'import type { paths } from "./api";',
        'type JobCreate = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"];',
        'type JobPut = paths["/api/v1/jobs/{name}"]["put"]["requestBody"]["content"]["application/json"];',
        'type JobPatch = paths["/api/v1/jobs/{name}"]["patch"]["requestBody"]["content"]' +
            '["application/merge-patch+json"];',
        "",
    ];
    const typeOf = { POST: "JobCreate", PUT: "JobPut", PATCH: "JobPatch" };
    for (const [n, request] of requests.entries()) {
        const type = request.named ? typeOf[request.method] : "JobCreate";
        if (!type)
            continue;
        out.push(`// README.md line ${request.line}: ${request.method}`);
        out.push(`export const readme${n}: ${type} = ${JSON.stringify(request.body, null, 2)};`);
    }
    out.push(
        "",
        "// Refused by the API, so refused by the types too.",
        "// @ts-expect-error a job needs a webhook",
        'export const noWebhook: JobCreate = { name: "x", schedule: "* * * * *" };',
        "// @ts-expect-error a webhook needs a url",
        'export const noUrl: JobCreate = { name: "x", schedule: "* * * * *", webhook: {} };',
        "// @ts-expect-error unknown method (each on one line: the directive covers the next)",
        'export const badMethod: JobCreate = { name: "x", schedule: "* * * * *", webhook: { url: "http://t/", method: "FETCH" } };',
        "// @ts-expect-error timeout_ms is a number",
        'export const badTimeout: JobCreate = { name: "x", schedule: "* * * * *", webhook: { url: "http://t/", timeout_ms: "30s" } };',
        "",
    );
    writeFileSync(path.join(work, "readme.ts"), out.join("\n"));
    const tsc = path.join(HERE, "node_modules", "typescript", "bin", "tsc");
    try {
        execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "es2022",
            "--module", "esnext", "--moduleResolution", "bundler", "--skipLibCheck", "false",
            path.join(work, "readme.ts")], { stdio: ["ignore", "pipe", "pipe"] });
        console.log(`readme client: ${requests.length} README request bodies type-check against ` +
                    "the openapi-typescript client (and 4 refused bodies do not)");
    } catch (error) {
        process.stderr.write(`tsc found errors in the README's requests:\n${error.stdout}${error.stderr}\n`);
        process.stderr.write(`--- readme.ts ---\n${out.join("\n")}\n`);
        status = 1;
    }
} finally {
    rmSync(work, { recursive: true, force: true });
}
process.exit(status);
