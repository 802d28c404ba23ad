/**
 * Where the UI finds the bridge. `installFlexBridge` resolves after the plugin has added its
 * components to Flex, so the components start without a handle and pick it up when it comes.
 */
import type { FlexBridgeHandle } from '@flex-bridge/client';

export type BridgeState =
  | { readonly status: 'starting' }
  | { readonly status: 'ready'; readonly handle: FlexBridgeHandle }
  | { readonly status: 'off'; readonly reason: string };

export class BridgeStore {
  private state: BridgeState = { status: 'starting' };
  private readonly listeners = new Set<() => void>();

  get current(): BridgeState {
    return this.state;
  }

  set(state: BridgeState): void {
    this.state = state;
    for (const listener of [...this.listeners]) listener();
  }

  /** Called whenever the state changes; returns the function that stops it. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }
}
