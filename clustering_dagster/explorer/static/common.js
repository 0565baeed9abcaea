/* Shared by the explorer's scripts: text from the data shown safely (always as text, never as
   markup; control characters and bidi overrides as visible escapes, as the server shows them). */
"use strict";
window.explorer = (function () {
  // C0 controls but line feed, DEL and C1 controls, bidi overrides and isolates, lone surrogates
  const UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ud800-\udfff]/gu;

  function visible(text) {
    return String(text == null ? "" : text).replace(UNSAFE, function (c) {
      const code = c.charCodeAt(0);
      return code < 0x100 ? "\\x" + code.toString(16).padStart(2, "0")
                          : "\\u" + code.toString(16).padStart(4, "0");
    });
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = visible(text);
    return node;
  }

  function number(value) {
    return value == null ? "" : Number(value).toLocaleString("en-US");
  }

  function pct(share) {
    return share == null ? "" : (100 * share).toFixed(1) + "%";
  }

  const SVG = "http://www.w3.org/2000/svg";

  function bar(percent) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "bar");
    svg.setAttribute("viewBox", "0 0 100 10");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const back = document.createElementNS(SVG, "rect");
    back.setAttribute("class", "bar-bg");
    back.setAttribute("width", "100");
    back.setAttribute("height", "10");
    const front = document.createElementNS(SVG, "rect");
    front.setAttribute("class", "bar-fg");
    front.setAttribute("width", String(Math.max(Number(percent) || 0, 0.5)));
    front.setAttribute("height", "10");
    svg.append(back, front);
    return svg;
  }

  return {visible: visible, el: el, number: number, pct: pct, bar: bar};
})();
