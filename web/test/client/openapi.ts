/**
 * What openapi.yaml says about one answer: whether the operation declares its
 * status, and whether the body matches the schema declared for it. The document is
 * read as it is (no copy of a schema here): OpenAPI 3.0's `nullable` becomes JSON
 * Schema's `null` type, `$ref`s point into the document, and Ajv validates.
 */

import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import { parse } from "yaml";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const DOC_ID = "openapi.json";

const isObject = (v: Json | undefined): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

/** OpenAPI 3.0 schema → JSON Schema (draft 7, as Ajv reads it). */
function toJsonSchema(node: Json): Json {
  if (Array.isArray(node)) return node.map(toJsonSchema);
  if (!isObject(node)) return node;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "nullable" || key === "example") continue;
    out[key] = key === "$ref" && typeof value === "string" && value.startsWith("#/") ? `${DOC_ID}${value}` : toJsonSchema(value);
  }
  if (node["nullable"] !== true) return out;
  if (typeof out["type"] === "string") {
    out["type"] = [out["type"], "null"];
    if (Array.isArray(out["enum"])) out["enum"] = [...out["enum"], null];
    return out;
  }
  return { anyOf: [out, { type: "null" }] };
}

export interface Operation {
  route: string;
  method: string;
}

export class OpenApi {
  private readonly doc: JsonObject;
  private readonly ajv = new Ajv({ strict: false, allErrors: true });
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(file: string) {
    const doc: Json = parse(readFileSync(file, "utf8"));
    if (!isObject(doc)) throw new Error(`${file} is not an OpenAPI document`);
    this.doc = doc;
    addFormats(this.ajv);
    this.ajv.addSchema({ $id: DOC_ID, components: toJsonSchema(doc["components"] ?? {}) });
  }

  /** Every operation the document declares. */
  operations(): Operation[] {
    const paths = this.doc["paths"];
    if (!isObject(paths)) return [];
    return Object.entries(paths).flatMap(([route, item]) =>
      isObject(item)
        ? Object.keys(item)
            .filter((m) => ["get", "put", "post", "delete", "patch"].includes(m))
            .map((method) => ({ route, method: method.toUpperCase() }))
        : [],
    );
  }

  /**
   * What is wrong with this answer by the document: nothing (`[]`), an undeclared
   * status, or the body's differences from the declared schema.
   */
  problems(op: Operation, status: number, body: unknown): string[] {
    const response = this.response(op, status);
    if (!response) return [`${op.method} ${op.route} declares no ${status} answer`];
    const content = response["content"];
    const schema = isObject(content) && isObject(content["application/json"]) ? content["application/json"]["schema"] : undefined;
    if (schema === undefined) return body === undefined ? [] : [`${status} declares no JSON body, yet one came`];
    const validate = this.validator(`${op.method} ${op.route} ${status}`, schema);
    if (validate(body)) return [];
    return (validate.errors ?? []).map((e) => `${status} body${e.instancePath || ""} ${e.message ?? "is invalid"} ${JSON.stringify(e.params)}`);
  }

  private response(op: Operation, status: number): JsonObject | undefined {
    const paths = this.doc["paths"];
    const item = isObject(paths) ? paths[op.route] : undefined;
    const operation = isObject(item) ? item[op.method.toLowerCase()] : undefined;
    const responses = isObject(operation) ? operation["responses"] : undefined;
    const found = isObject(responses) ? responses[String(status)] : undefined;
    if (!isObject(found)) return undefined;
    const ref = found["$ref"];
    if (typeof ref !== "string") return found;
    // "#/components/responses/BadRequest"
    const named = ref.split("/").slice(1).reduce<Json | undefined>((at, key) => (isObject(at) ? at[key] : undefined), this.doc);
    return isObject(named) ? named : undefined;
  }

  private validator(key: string, schema: Json): ValidateFunction {
    let validate = this.compiled.get(key);
    if (!validate) {
      validate = this.ajv.compile(toJsonSchema(schema) as object);
      this.compiled.set(key, validate);
    }
    return validate;
  }
}
