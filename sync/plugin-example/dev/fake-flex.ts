/**
 * Just enough of Flex UI for the plugin to run on a laptop against `flex-bridge emulator`:
 * the Actions framework (before-listeners that may abort), two dynamic content stores, the
 * notifications, and a Manager whose `insightsClient` is an `EmulatorSyncClient`.
 *
 * It is a harness, not a Flex: only what the plugin touches is here. The real Flex UI cannot
 * run against the emulator (it logs in to Twilio).
 */
import * as React from 'react';

type Abort = () => void;
type BeforeListener = (payload: unknown, abort: Abort) => unknown;
type Listener = (...args: unknown[]) => void;

/** A tiny event emitter, for the harness's own change notifications and `manager.events`. */
export class Emitter {
  private readonly listeners = new Map<string, Set<Listener>>();

  addListener(event: string, listener: Listener): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  removeListener(event: string, listener: Listener): this {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  emit(event: string, ...args: unknown[]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) listener(...args);
  }
}

/** Flex's Actions: `before<Name>` listeners run in order, awaited; any may abort. */
export class FakeActions {
  private readonly listeners = new Map<string, BeforeListener[]>();

  addListener(name: string, listener: BeforeListener): void {
    this.listeners.set(name, [...(this.listeners.get(name) ?? []), listener]);
  }

  removeListener(name: string, listener: BeforeListener): void {
    this.listeners.set(name, (this.listeners.get(name) ?? []).filter((l) => l !== listener));
  }

  /** Runs the before-listeners, then `action` unless one aborted. Returns whether it ran. */
  async invokeAction(name: string, payload: unknown, action: () => Promise<void>): Promise<boolean> {
    let aborted = false;
    for (const listener of this.listeners.get(`before${name}`) ?? []) {
      await listener(payload, () => {
        aborted = true;
      });
      if (aborted) return false;
    }
    await action();
    return true;
  }
}

/** A DynamicContentStore: the fragments the plugin added, rendered with the task's props. */
export class FakeContentStore {
  readonly changes = new Emitter();
  private fragments: React.ReactElement[] = [];

  add(child: React.ReactElement): () => void {
    this.fragments = [...this.fragments, child];
    this.changes.emit('change');
    return () => {
      this.fragments = this.fragments.filter((f) => f !== child);
      this.changes.emit('change');
    };
  }

  render(props: Record<string, unknown>): React.ReactElement[] {
    return this.fragments.map((fragment) => React.cloneElement(fragment, props));
  }
}

export interface FakeNotification {
  readonly id: string;
  readonly content?: React.ReactNode;
  readonly type?: string;
}

export interface ShownNotification {
  readonly instance: number;
  readonly id: string;
  readonly type: string;
  readonly body: React.ReactNode;
}

/** Flex's Notifications: an element's content gets `notificationContext`, as Flex does. */
export class FakeNotifications {
  readonly changes = new Emitter();
  private readonly registered = new Map<string, FakeNotification>();
  private shown: ShownNotification[] = [];
  private next = 1;

  registerNotification(notification: FakeNotification): void {
    this.registered.set(notification.id, notification);
  }

  showNotification(id: string, context?: object): void {
    const notification = this.registered.get(id);
    if (!notification) throw new Error(`notification ${id} is not registered`);
    const content = notification.content;
    const body = React.isValidElement(content)
      ? React.cloneElement(content, { notificationContext: context })
      : content;
    this.shown = [{ instance: this.next++, id, type: notification.type ?? 'information', body }, ...this.shown].slice(0, 5);
    this.changes.emit('change');
  }

  dismiss(instance: number): void {
    this.shown = this.shown.filter((n) => n.instance !== instance);
    this.changes.emit('change');
  }

  active(): readonly ShownNotification[] {
    return this.shown;
  }
}

export function fakeFlex() {
  return {
    Actions: new FakeActions(),
    Notifications: new FakeNotifications(),
    NotificationType: {
      information: 'information',
      success: 'success',
      warning: 'warning',
      error: 'error',
    },
    TaskListItem: { Content: new FakeContentStore() },
    TaskCanvasHeader: { Content: new FakeContentStore() },
  } as const;
}

export type FakeFlex = ReturnType<typeof fakeFlex>;

export interface FakeManager {
  readonly user: { token: string };
  readonly events: Emitter;
  readonly workerClient: { readonly sid: string };
  readonly insightsClient: unknown;
}
