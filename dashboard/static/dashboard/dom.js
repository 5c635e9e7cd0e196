// Building DOM nodes from data that may be hostile (names, webhook answers, errors): every text
// goes in through textContent or a text node, attributes through setAttribute with names chosen
// here. Nothing in this page assigns innerHTML or builds markup from strings.

const SVG_NS = "http://www.w3.org/2000/svg";

// el("td", {className: "num", title: "..."}, "text", childNode, ...)
export function el(tag, props = {}, ...children) {
  return fill(document.createElement(tag), props, children);
}

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) append(node, child);
  return node;
}

function fill(node, props, children) {
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "className") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) append(node, child);
  return node;
}

function append(node, child) {
  if (child === undefined || child === null || child === false) return;
  node.append(child instanceof Node ? child : document.createTextNode(String(child)));
}

// Replace a node's children with text (not markup).
export function setText(node, text) {
  node.textContent = text === undefined || text === null ? "" : String(text);
}
