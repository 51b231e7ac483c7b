/** A tiny element builder: the views are small enough not to need React. */

type Child = Node | string | null | false | undefined;

export function h(
  tag: string,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== false && child !== undefined) {
      element.append(child);
    }
  }
  return element;
}
