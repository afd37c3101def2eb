// The API reference of `seq2seq serve`, drawn from /openapi.json in the browser (no network).
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function resolve(schema, spec) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function typeOf(schema, spec) {
  schema = resolve(schema, spec);
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(s, spec)).filter((t) => t !== "null").join(" | ") + " | null";
  if (schema.type === "array") return `array of ${typeOf(schema.items, spec)}`;
  return schema.type || "object";
}

function example(path, schema, spec) {
  const body = {};
  for (const [name, field] of Object.entries(schema.properties || {})) {
    if ((schema.required || []).includes(name)) body[name] = field.examples ? field.examples[0] : "…";
  }
  return `curl -s ${location.origin}${path} -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body)}'`;
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  const root = document.getElementById("endpoints");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const section = element("section", undefined, "panel");
      section.appendChild(element("h2", `${method.toUpperCase()} ${path}`));
      if (operation.summary) section.appendChild(element("p", operation.summary, "muted"));
      const content = operation.requestBody && operation.requestBody.content["application/json"];
      if (content) {
        const schema = resolve(content.schema, spec);
        const table = element("table", undefined, "fields");
        const head = table.createTHead().insertRow();
        for (const title of ["field", "type", "default", "meaning"]) head.appendChild(element("th", title));
        const body = table.createTBody();
        for (const [name, field] of Object.entries(schema.properties || {})) {
          const row = body.insertRow();
          const required = (schema.required || []).includes(name);
          row.appendChild(element("td", name + (required ? " *" : "")));
          row.appendChild(element("td", typeOf(field, spec)));
          row.appendChild(element("td", required ? "required" : JSON.stringify(field.default ?? null)));
          row.appendChild(element("td", field.description || ""));
        }
        const box = element("div", undefined, "heatmap-box");
        box.appendChild(table);
        section.appendChild(box);
        section.appendChild(element("pre", example(path, schema, spec), "generated"));
      }
      root.appendChild(section);
    }
  }
}

document.addEventListener("DOMContentLoaded", main);
