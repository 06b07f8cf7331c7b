/**
 * A small store: one state object, replaced (never mutated in place by views) on every `set`, and listeners told of
 * each change. `mount` renders a view's template from a store into an element and renders it again, at most once per
 * microtask, after every change: lit-html updates only the parts whose values changed, so what a person is doing
 * (typed text, focus, a selected option, the scroll position) stays as it is.
 */
import { render } from './lit.js';

export type Listener<T> = (state: T) => void;

export class Store<T extends object> {
  private listeners = new Set<Listener<T>>();
  constructor(private current: T) {}

  get state(): T {
    return this.current;
  }

  /** Merges a patch (or what `fn(state)` returns) into a new state and tells the listeners. */
  set(patch: Partial<T> | ((state: T) => Partial<T> | void)) {
    const p = typeof patch === 'function' ? patch(this.current) : patch;
    if (!p) return;
    this.current = { ...this.current, ...p };
    for (const fn of this.listeners) fn(this.current);
  }

  subscribe(fn: Listener<T>): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

/**
 * Renders `view(state)` into `root` now and after each change of the store; `after` runs after each render (to
 * scroll, for instance). Returns the unmount, which stops the renders.
 */
export function mount<T extends object>(
  root: HTMLElement,
  store: Store<T>,
  view: (state: T) => unknown,
  after?: (root: HTMLElement, state: T) => void,
): () => void {
  let queued = false;
  let mounted = true;
  const draw = () => {
    queued = false;
    if (!mounted) return;
    render(view(store.state), root);
    after?.(root, store.state);
  };
  const unsubscribe = store.subscribe(() => {
    if (queued) return;
    queued = true;
    queueMicrotask(draw);
  });
  draw();
  return () => {
    mounted = false;
    unsubscribe();
  };
}
