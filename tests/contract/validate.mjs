#!/usr/bin/env node
/*
 * validate.mjs - checks the HTTP exchanges the integration tests recorded
 * (CRONFENCE_CONTRACT_LOG, one JSON object a line; see
 * tests/integration/conftest.py) against api/openapi.yaml.
 *
 *   node validate.mjs [--spec FILE] [--routes FILE] LOG...
 *
 * For every exchange it finds the operation (path template and method) and
 * checks that
 *   - the status is documented for the operation;
 *   - the response's Content-Type is a documented media type and its body
 *     matches that media type's schema (JSON and problem+json are parsed;
 *     a problem's "status" must be the HTTP status); the events of a
 *     recorded event stream match the stream's contentSchema; the served
 *     spec is the file given with --spec;
 *   - every required documented response header is there and matches its
 *     schema, and no significant header (ETag, Location, ...) is sent where
 *     the spec does not document it;
 *   - the request is valid per the spec (security, path, query and header
 *     parameters, body and its Content-Type) whenever the server answered
 *     2xx, and the server answered 4xx whenever it is not;
 *   - a path the spec does not have was answered 404 and a method a path
 *     does not have 405, with `Allow` listing exactly the documented methods.
 * With --routes, the route table of server/api.c must list exactly the
 * spec's operations.
 *
 * Prints a summary (exchanges, operations and statuses covered, what the
 * spec documents that no test exercised) and every failure with the test
 * that made the exchange; exits 1 on any failure, 2 on bad usage.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { fileURLToPath } from "node:url";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { parse as parseYaml } from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_SPEC = path.join(HERE, "..", "..", "api", "openapi.yaml");
const SPEC_ID = "openapi.json";
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
/* Response headers whose presence means something: sent, they must be documented. */
const SIGNIFICANT_HEADERS = ["etag", "location", "allow", "retry-after", "www-authenticate",
    "cronfence-access"];
const MAX_FAILURES_SHOWN = 200;

/* ---------------------------------------------------------------------- */
/* Command line                                                             */
/* ---------------------------------------------------------------------- */

function usage(message) {
    process.stderr.write(`${message}\nusage: node validate.mjs [--spec FILE] [--routes FILE] LOG...\n`);
    process.exit(2);
}

function parseArgs(argv) {
    const args = { spec: DEFAULT_SPEC, routes: null, logs: [] };
    for (let i = 0; i < argv.length; i++) {
        if (argv[i] === "--spec" || argv[i] === "--routes") {
            if (i + 1 >= argv.length)
                usage(`${argv[i]} needs a file`);
            args[argv[i].slice(2)] = argv[++i];
        } else if (argv[i].startsWith("--")) {
            usage(`unknown option ${argv[i]}`);
        } else {
            args.logs.push(argv[i]);
        }
    }
    if (args.logs.length === 0)
        usage("no exchange log given");
    return args;
}

/* ---------------------------------------------------------------------- */
/* The spec                                                                 */
/* ---------------------------------------------------------------------- */

function escapePointerSegment(segment) {
    return String(segment).replaceAll("~", "~0").replaceAll("/", "~1");
}

function pointerOf(...segments) {
    return segments.map((s) => "/" + escapePointerSegment(s)).join("");
}

class Spec {
    constructor(text) {
        this.text = text;
        this.doc = parseYaml(text);
        this.ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false,
            allowUnionTypes: true });
        addFormats(this.ajv);
        this.ajv.addFormat("int64", { type: "number", validate: (n) => Number.isSafeInteger(n) });
        this.ajv.addFormat("int32", { type: "number",
            validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
        /*
         * OpenAPI's own schema keywords, and the members of the document's
         * root, which Ajv meets when it resolves a $ref into the document:
         * annotations only.
         */
        for (const keyword of ["example", "discriminator", "xml", "externalDocs", "openapi",
            "info", "jsonSchemaDialect", "servers", "security", "tags", "paths", "webhooks",
            "components"])
            this.ajv.addKeyword({ keyword });
        this.ajv.addSchema(this.doc, SPEC_ID);
        this.validators = new Map();
        this.templates = Object.keys(this.doc.paths || {}).map((template) => ({
            template,
            segments: template.split("/"),
            literals: template.split("/").filter((s) => !s.startsWith("{")).length,
        }));
    }

    /* The node at a JSON pointer ("/components/schemas/Job"). */
    at(pointer) {
        let node = this.doc;
        for (const raw of pointer.split("/").slice(1)) {
            const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
            if (node === undefined || node === null)
                return undefined;
            node = node[key];
        }
        return node;
    }

    /* Follows local $refs; returns {node, pointer} of the target. */
    deref(node, pointer) {
        for (let hops = 0; node && typeof node.$ref === "string" && hops < 20; hops++) {
            if (!node.$ref.startsWith("#/"))
                throw new Error(`only local $refs are supported: ${node.$ref}`);
            pointer = node.$ref.slice(1);
            node = this.at(pointer);
        }
        return { node, pointer };
    }

    /* A compiled validator of the schema at pointer (cached). */
    validator(pointer) {
        let validate = this.validators.get(pointer);
        if (validate === undefined) {
            const fragment = pointer.split("/").map((s) => encodeURIComponent(s)).join("/");
            validate = this.ajv.compile({ $ref: `${SPEC_ID}#${fragment}` });
            this.validators.set(pointer, validate);
        }
        return validate;
    }

    /* Errors of value against the schema at pointer, as short strings (empty when valid). */
    check(pointer, value) {
        const validate = this.validator(pointer);
        if (validate(value))
            return [];
        return validate.errors.slice(0, 8).map((e) => {
            const where = e.instancePath || "(root)";
            const extra = e.params && e.params.additionalProperty !== undefined
                ? ` '${e.params.additionalProperty}'`
                : e.params && e.params.missingProperty !== undefined
                    ? ` '${e.params.missingProperty}'` : "";
            return `${where} ${e.message}${extra}`;
        });
    }

    /* The schema's type list, following $refs and allOf/oneOf/anyOf. */
    typesOf(schema, pointer) {
        const { node } = this.deref(schema, pointer);
        if (!node)
            return [];
        if (node.type)
            return Array.isArray(node.type) ? node.type : [node.type];
        for (const key of ["allOf", "oneOf", "anyOf"])
            if (Array.isArray(node[key]))
                return node[key].flatMap((sub, i) => this.typesOf(sub, `${pointer}/${key}/${i}`));
        return [];
    }

    /* Every documented operation: {method, template, op, pointer, pathItem}. */
    operations() {
        const list = [];
        for (const [template, item] of Object.entries(this.doc.paths || {}))
            for (const method of METHODS)
                if (item[method])
                    list.push({ method, template, op: item[method],
                        pointer: pointerOf("paths", template, method), pathItem: item });
        return list;
    }

    /* The template matching a decoded path's segments, with its path parameters. */
    match(segments) {
        let best = null;
        for (const t of this.templates) {
            if (t.segments.length !== segments.length)
                continue;
            const params = {};
            let ok = true;
            for (let i = 0; i < segments.length && ok; i++) {
                const want = t.segments[i];
                if (want.startsWith("{") && want.endsWith("}")) {
                    params[want.slice(1, -1)] = segments[i];
                    ok = segments[i] !== "";
                } else {
                    ok = want === segments[i];
                }
            }
            if (ok && (best === null || t.literals > best.literals))
                best = { template: t.template, literals: t.literals, params };
        }
        return best;
    }
}

/* ---------------------------------------------------------------------- */
/* Exchanges                                                                */
/* ---------------------------------------------------------------------- */

function headerOf(pairs, name) {
    const lower = name.toLowerCase();
    if (Array.isArray(pairs)) {
        const found = pairs.find(([key]) => key.toLowerCase() === lower);
        return found ? found[1] : undefined;
    }
    for (const [key, value] of Object.entries(pairs || {}))
        if (key.toLowerCase() === lower)
            return value;
    return undefined;
}

function parseJsonOrNull(text) {
    try {
        return JSON.parse(text);
    } catch {
        return null;
    }
}

function essence(contentType) {
    return (contentType || "").split(";")[0].trim().toLowerCase();
}

function isJsonType(mediaType) {
    return mediaType === "application/json" || mediaType.endsWith("+json");
}

/* The percent-decoded path, as the server routes it. */
function decodePath(rawPath) {
    try {
        return decodeURIComponent(rawPath);
    } catch {
        return rawPath;
    }
}

function bodyBytes(exchange, prefix) {
    if (exchange[`${prefix}_truncated`])
        return exchange[`${prefix}_bytes`];
    if (exchange[`${prefix}_base64`] !== undefined)
        return Buffer.from(exchange[`${prefix}_base64`], "base64").length;
    return exchange[prefix] ? Buffer.byteLength(exchange[prefix]) : 0;
}

/* Coerces a parameter's text to the type its schema asks for, where it can. */
function coerceParam(spec, schema, pointer, text) {
    const types = spec.typesOf(schema, pointer);
    if ((types.includes("integer") || types.includes("number")) && /^-?[0-9]+(\.[0-9]+)?$/.test(text))
        return Number(text);
    if (types.includes("boolean") && (text === "true" || text === "false"))
        return text === "true";
    return text;
}

class Checker {
    constructor(spec) {
        this.spec = spec;
        this.failures = [];
        this.exchanges = 0;
        this.skipped = 0;
        this.events = 0;
        /* "METHOD template" -> Map(status -> count) */
        this.coverage = new Map();
        this.unknownPaths = new Map();
        this.unknownMethods = new Map();
    }

    fail(exchange, message) {
        this.failures.push({
            test: exchange.test || "(no test id)",
            what: `${exchange.method} ${exchange.path} -> ${exchange.status}`,
            message,
        });
    }

    /* The parameters of an operation, path-level ones overridden by its own. */
    parametersOf(operation) {
        const byKey = new Map();
        const add = (list, base) => (list || []).forEach((p, i) => {
            const { node, pointer } = this.spec.deref(p, `${base}/parameters/${i}`);
            byKey.set(`${node.in}:${node.name.toLowerCase()}`, { param: node, pointer });
        });
        add(operation.pathItem.parameters, pointerOf("paths", operation.template));
        add(operation.op.parameters, operation.pointer);
        return [...byKey.values()];
    }

    /* Reasons the request is invalid per the spec; "unverifiable" entries when it cannot tell. */
    requestProblems(exchange, operation, pathParams, query) {
        const spec = this.spec;
        const problems = [];
        const security = operation.op.security ?? spec.doc.security ?? [];
        const needsAuth = security.length > 0 && !security.some((req) => Object.keys(req).length === 0);
        if (needsAuth) {
            const auth = headerOf(exchange.request_headers, "Authorization") || "";
            const [scheme, ...rest] = auth.split(" ");
            if (scheme.toLowerCase() !== "bearer" || rest.join(" ").trim() === "")
                problems.push("no bearer token");
        }
        for (const { param, pointer } of this.parametersOf(operation)) {
            let text;
            if (param.in === "path")
                text = pathParams[param.name];
            else if (param.in === "query")
                text = query.has(param.name) ? query.get(param.name) : undefined;
            else if (param.in === "header")
                text = headerOf(exchange.request_headers, param.name);
            else
                continue;
            if (text === undefined) {
                if (param.required)
                    problems.push(`${param.in} parameter ${param.name} is missing`);
                continue;
            }
            if (!param.schema)
                continue;
            const value = coerceParam(spec, param.schema, `${pointer}/schema`, text);
            for (const error of spec.check(`${pointer}/schema`, value))
                problems.push(`${param.in} parameter ${param.name}=${JSON.stringify(text).slice(0, 80)}: ${error}`);
        }
        const requestBody = operation.op.requestBody
            ? spec.deref(operation.op.requestBody, `${operation.pointer}/requestBody`) : null;
        const size = bodyBytes(exchange, "request_body");
        if (requestBody && requestBody.node) {
            const body = requestBody.node;
            if (size === 0) {
                if (body.required)
                    problems.push("the request body is missing");
            } else if (exchange.request_body_truncated) {
                problems.push(`unverifiable: the request body (${size} bytes) was too large to record`);
            } else {
                const type = essence(headerOf(exchange.request_headers, "Content-Type"));
                const media = Object.keys(body.content || {}).find((m) => m.toLowerCase() === type);
                if (!media) {
                    problems.push(`request Content-Type ${JSON.stringify(type)} is not one of ${Object.keys(body.content || {}).join(", ")}`);
                } else if (isJsonType(media)) {
                    let value;
                    let parsed = exchange.request_body_base64 === undefined;
                    if (parsed) {
                        try {
                            value = JSON.parse(exchange.request_body);
                        } catch {
                            parsed = false;
                        }
                    }
                    if (!parsed) {
                        problems.push("the request body is not JSON");
                    } else if (body.content[media].schema) {
                        const pointer = `${requestBody.pointer}/content/${escapePointerSegment(media)}/schema`;
                        for (const error of spec.check(pointer, value))
                            problems.push(`request body: ${error}`);
                    }
                }
            }
        }
        return problems;
    }

    /* Checks the response against the documented response object at pointer. */
    checkResponse(exchange, response, pointer, operation) {
        const spec = this.spec;
        const head = exchange.method === "HEAD";
        const headers = response.headers || {};
        const documented = new Set(Object.keys(headers).map((h) => h.toLowerCase()));
        for (const [name, raw] of Object.entries(headers)) {
            const { node: header, pointer: headerPointer } = spec.deref(raw, `${pointer}/headers/${escapePointerSegment(name)}`);
            const value = headerOf(exchange.response_headers, name);
            if (value === undefined) {
                if (header.required)
                    this.fail(exchange, `required response header ${name} is missing`);
                continue;
            }
            if (header.schema) {
                const coerced = coerceParam(spec, header.schema, `${headerPointer}/schema`, value);
                for (const error of spec.check(`${headerPointer}/schema`, coerced))
                    this.fail(exchange, `response header ${name}: ${JSON.stringify(value)} ${error}`);
            }
        }
        for (const name of SIGNIFICANT_HEADERS)
            if (!documented.has(name) && headerOf(exchange.response_headers, name) !== undefined)
                this.fail(exchange, `response header ${name} is sent but not documented for ${exchange.status}`);

        const content = response.content || {};
        const sentType = headerOf(exchange.response_headers, "Content-Type");
        const text = exchange.response_body ?? "";
        if (Object.keys(content).length === 0) {
            if (text !== "")
                this.fail(exchange, `the spec documents no body for ${exchange.status}, but one was sent`);
            return;
        }
        const media = Object.keys(content).find((m) => m.toLowerCase() === essence(sentType));
        if (!media) {
            this.fail(exchange, `Content-Type ${JSON.stringify(sentType)} is not documented (${Object.keys(content).join(", ")})`);
            return;
        }
        const schemaPointer = `${pointer}/content/${escapePointerSegment(media)}/schema`;
        if (exchange.stream) {
            this.checkEvents(exchange, content[media], schemaPointer);
            return;
        }
        if (head)
            return;
        if (operation && operation.op.operationId === "getOpenApi" && exchange.status === 200 &&
            text !== spec.text)
            this.fail(exchange, "the served spec differs from the spec file (rebuild the binary?)");
        if (operation && operation.op.operationId === "getOpenApiJson" && exchange.status === 200 &&
            !isDeepStrictEqual(parseJsonOrNull(text), spec.doc))
            this.fail(exchange, "the served JSON spec differs from the spec file (rebuild the binary?)");
        if (!content[media].schema)
            return;
        let value = text;
        if (isJsonType(media)) {
            try {
                value = JSON.parse(text);
            } catch (error) {
                this.fail(exchange, `the ${media} body is not JSON: ${error.message}`);
                return;
            }
            if (media === "application/problem+json" && value && typeof value === "object" &&
                "status" in value && value.status !== exchange.status)
                this.fail(exchange, `the problem's status ${value.status} is not the HTTP status`);
        }
        for (const error of spec.check(schemaPointer, value))
            this.fail(exchange, `response body: ${error}`);
    }

    /* The events of a recorded stream, against its media type's contentSchema. */
    checkEvents(exchange, media, schemaPointer) {
        const { node: schema } = this.spec.deref(media.schema, schemaPointer);
        if (!schema || !schema.contentSchema) {
            this.fail(exchange, "the stream's schema has no contentSchema for its events");
            return;
        }
        for (const event of exchange.events || []) {
            this.events++;
            for (const error of this.spec.check(`${schemaPointer}/contentSchema`, event))
                this.fail(exchange, `event ${event.event} ${event.id ?? ""}: ${error}`);
        }
    }

    /* A path or method the spec does not have: only 404 / 405 (or 413) may answer it. */
    checkUndocumented(exchange, template) {
        const spec = this.spec;
        const tooLarge = exchange.status === 413;
        const text = exchange.response_body ?? "";
        const problem = () => {
            if (exchange.method === "HEAD")
                return;
            if (essence(headerOf(exchange.response_headers, "Content-Type")) !== "application/problem+json") {
                this.fail(exchange, "the answer is not application/problem+json");
                return;
            }
            let value;
            try {
                value = JSON.parse(text);
            } catch {
                this.fail(exchange, "the problem document is not JSON");
                return;
            }
            for (const error of spec.check("/components/schemas/Problem", value))
                this.fail(exchange, `problem document: ${error}`);
        };
        if (template === null) {
            const key = `${exchange.method} ${exchange.status}`;
            this.unknownPaths.set(key, (this.unknownPaths.get(key) || 0) + 1);
            if (exchange.status !== 404 && !tooLarge)
                this.fail(exchange, "a path the spec does not have was answered neither 404 nor 413");
            problem();
            return;
        }
        const methods = METHODS.filter((m) => spec.doc.paths[template][m]).map((m) => m.toUpperCase());
        const key = `${exchange.method} ${template} ${exchange.status}`;
        this.unknownMethods.set(key, (this.unknownMethods.get(key) || 0) + 1);
        if (exchange.status !== 405 && !tooLarge) {
            this.fail(exchange, `${exchange.method} is not documented on ${template} (${methods.join(", ")}), yet it was answered ${exchange.status}`);
            return;
        }
        if (exchange.status === 405) {
            const allow = headerOf(exchange.response_headers, "Allow");
            const sent = (allow || "").split(",").map((m) => m.trim()).filter(Boolean).sort();
            if (allow === undefined)
                this.fail(exchange, "405 without Allow");
            else if (sent.join(",") !== [...methods].sort().join(","))
                this.fail(exchange, `Allow: ${allow} differs from the documented methods of ${template} (${methods.join(", ")})`);
        }
        problem();
    }

    check(exchange) {
        this.exchanges++;
        const [rawPath, rawQuery = ""] = exchange.path.split(/\?(.*)/s);
        const decoded = decodePath(rawPath);
        const matched = this.spec.match(decoded.split("/"));
        if (matched === null && !decoded.startsWith("/api/")) {
            this.skipped++; /* the dashboard's static files are not part of the API */
            return;
        }
        if (matched === null) {
            this.checkUndocumented(exchange, null);
            return;
        }
        const item = this.spec.doc.paths[matched.template];
        const method = exchange.method === "HEAD" && !item.head ? "get" : exchange.method.toLowerCase();
        if (!item[method]) {
            this.checkUndocumented(exchange, matched.template);
            return;
        }
        const operation = { method, template: matched.template, op: item[method],
            pointer: pointerOf("paths", matched.template, method), pathItem: item };
        const key = `${method.toUpperCase()} ${matched.template}`;
        const seen = this.coverage.get(key) || new Map();
        this.coverage.set(key, seen);
        seen.set(exchange.status, (seen.get(exchange.status) || 0) + 1);

        const status = String(exchange.status);
        const responses = operation.op.responses || {};
        const code = status in responses ? status
            : `${status[0]}XX` in responses ? `${status[0]}XX`
                : "default" in responses ? "default" : null;
        if (code === null) {
            this.fail(exchange, `status ${status} is not documented for ${operation.op.operationId} (${Object.keys(responses).join(", ")})`);
        } else {
            const { node, pointer } = this.spec.deref(responses[code], `${operation.pointer}/responses/${code}`);
            this.checkResponse(exchange, node, pointer, operation);
        }

        const query = new URLSearchParams(rawQuery);
        const problems = this.requestProblems(exchange, operation, matched.params, query);
        const success = exchange.status >= 200 && exchange.status < 300;
        const clientError = exchange.status >= 400 && exchange.status < 500;
        if (success && problems.length > 0)
            this.fail(exchange, `answered ${status} to a request the spec calls invalid: ${problems.join("; ")}`);
        else if (!clientError && problems.some((p) => !p.startsWith("unverifiable")))
            this.fail(exchange, `a request the spec calls invalid was answered ${status}, not 4xx: ${problems.join("; ")}`);
    }

    /* The route table of server/api.c against the spec's operations. */
    checkRoutes(file) {
        const source = readFileSync(file, "utf8");
        const table = source.match(/routes\[\]\s*=\s*\{([\s\S]*?)\n\};/);
        const normalise = (template) => template.replace(/\{[^}]*\}/g, "{}");
        const failure = (message) => this.failures.push({ test: file, what: "route table", message });
        if (!table) {
            failure("no routes[] table found");
            return;
        }
        const routes = new Set([...table[1].matchAll(/\{\s*"([A-Z*]+)"\s*,\s*"([^"]+)"\s*,\s*\w+\s*\}/g)]
            .map((m) => `${m[1]} ${normalise(m[2])}`));
        const documented = new Set(this.spec.operations()
            .map((o) => `${o.method.toUpperCase()} ${normalise(o.template)}`));
        for (const route of routes)
            if (!documented.has(route))
                failure(`the server routes ${route}, which the spec does not document`);
        for (const op of documented)
            if (!routes.has(op))
                failure(`the spec documents ${op}, which the server does not route`);
        this.routes = routes.size;
    }
}

/* ---------------------------------------------------------------------- */
/* Report                                                                   */
/* ---------------------------------------------------------------------- */

function report(spec, checker) {
    const out = [];
    const operations = spec.operations();
    const covered = operations.filter((o) => checker.coverage.has(`${o.method.toUpperCase()} ${o.template}`));
    out.push(`contract: ${checker.exchanges} exchanges checked (${checker.skipped} with dashboard files skipped), ${checker.events} stream events checked`);
    if (checker.routes !== undefined)
        out.push(`contract: ${checker.routes} routes of the server compared with the spec`);
    out.push(`contract: operations covered: ${covered.length}/${operations.length}`);
    const never = [];
    for (const o of operations) {
        const key = `${o.method.toUpperCase()} ${o.template}`;
        const seen = checker.coverage.get(key) || new Map();
        const statuses = [...seen.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}x${n}`);
        const missing = Object.keys(o.op.responses || {}).filter((s) => !seen.has(Number(s)));
        out.push(`  ${(o.op.operationId || "").padEnd(16)} ${key.padEnd(34)} ${statuses.join(" ") || "-"}` +
            (missing.length ? `   never: ${missing.join(" ")}` : ""));
        if (seen.size === 0)
            never.push(key);
    }
    if (checker.unknownPaths.size > 0)
        out.push(`contract: undocumented /api/ paths (method status x count): ${[...checker.unknownPaths.entries()].map(([k, n]) => `${k}x${n}`).join(", ")}`);
    if (checker.unknownMethods.size > 0)
        out.push(`contract: undocumented methods (method path status x count): ${[...checker.unknownMethods.entries()].map(([k, n]) => `${k}x${n}`).join(", ")}`);
    if (never.length > 0)
        out.push(`contract: operations never exercised (information): ${never.join(", ")}`);
    const failures = checker.failures;
    for (const f of failures.slice(0, MAX_FAILURES_SHOWN))
        out.push(`FAIL ${f.test}\n     ${f.what}\n     ${f.message}`);
    if (failures.length > MAX_FAILURES_SHOWN)
        out.push(`... and ${failures.length - MAX_FAILURES_SHOWN} more failures`);
    out.push(failures.length === 0
        ? `contract: OK, ${checker.exchanges} exchanges valid`
        : `contract: ${failures.length} failures`);
    process.stdout.write(out.join("\n") + "\n");
}

function main() {
    const args = parseArgs(process.argv.slice(2));
    const spec = new Spec(readFileSync(args.spec, "utf8"));
    const checker = new Checker(spec);
    if (args.routes)
        checker.checkRoutes(args.routes);
    for (const log of args.logs) {
        const lines = readFileSync(log, "utf8").split("\n");
        lines.forEach((line, index) => {
            if (line.trim() === "")
                return;
            let exchange;
            try {
                exchange = JSON.parse(line);
            } catch (error) {
                checker.failures.push({ test: `${log}:${index + 1}`, what: "log", message: `not JSON: ${error.message}` });
                return;
            }
            checker.check(exchange);
        });
    }
    if (checker.exchanges === 0)
        checker.failures.push({ test: args.logs.join(" "), what: "log", message: "no exchange recorded" });
    report(spec, checker);
    process.exit(checker.failures.length === 0 ? 0 : 1);
}

main();
