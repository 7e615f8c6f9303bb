// Tiny DOM builders. Every value goes in as a text node or an attribute,
// never as HTML, so strings from the API cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

// Properties that must be set on the element rather than as attributes
// (a select's value only exists once its options are in place).
const PROPERTIES = new Set(['value', 'checked', 'selected']);

function appendChildren(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function applyProps(element, props) {
  const late = [];
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) {
      late.push([key, value]);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return late;
}

// h('a', {href: '#/jobs', class: 'x', onclick: fn}, 'text', child, [more])
// Props: attributes (true = present, false/null = absent), on* listeners,
// and value/checked/selected as properties.
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  const late = applyProps(element, props);
  appendChildren(element, children);
  for (const [key, value] of late) element[key] = value;
  return element;
}

// The same for SVG elements.
export function s(tag, props = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  applyProps(element, props);
  appendChildren(element, children);
  return element;
}

// Replaces all children of `element` with `children`.
export function replace(element, ...children) {
  element.replaceChildren();
  appendChildren(element, children);
}

// A process-unique id for label/aria wiring.
let idCounter = 0;
export function uniqueId(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}
