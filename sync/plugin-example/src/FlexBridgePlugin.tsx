/**
 * The example plugin: the bridge's accept guard, the bridge's state on each task, its errors
 * in Flex's notifications. Flex constructs the class and calls `init(flex, manager)`.
 */
import * as React from 'react';
import type * as Flex from '@twilio/flex-ui';
import { installFlexBridge } from '@flex-bridge/client';
import { BridgeStatus } from './BridgeStatus';
import { buildConfig } from './config';
import type { ConfigResult } from './config';
import { registerNotifications, showBridgeError } from './notifications';
import { BridgeStore } from './store';

export const PLUGIN_NAME = 'FlexBridgeExamplePlugin';

export class FlexBridgePlugin {
  readonly name = PLUGIN_NAME;

  /**
   * Returns at once: the bridge is installed in the background, so a slow Sync connection
   * never holds up Flex. Until it is installed (normally well under a second), Flex's accept
   * runs unguarded.
   */
  async init(flex: typeof Flex, manager: Flex.Manager): Promise<void> {
    setUp(flex, manager, buildConfig);
  }
}

/** Everything `init` does, with the settings passed in (the local harness passes its own). */
export function setUp(flex: typeof Flex, manager: Flex.Manager, settings: ConfigResult): BridgeStore {
  const store = new BridgeStore();
  registerNotifications(flex);

  if (!settings.ok) {
    const reason = `flex-bridge plugin is not configured: ${settings.problem}`;
    console.error(reason);
    showBridgeError(flex, reason);
    store.set({ status: 'off', reason });
    return store;
  }
  if (!manager.workerClient) {
    // A user without a TaskRouter worker (some supervisors, admins) has no channel to watch.
    store.set({ status: 'off', reason: 'this user is not a TaskRouter worker' });
    return store;
  }

  flex.TaskListItem.Content.add(<BridgeStatus key="flex-bridge-status" store={store} />, {
    sortOrder: 100,
  });
  flex.TaskCanvasHeader.Content.add(<BridgeStatus key="flex-bridge-status" store={store} />, {
    sortOrder: 100,
  });

  // routeAccept is left at its default: every accept but voice goes through the bridge. A
  // plain accept does not connect a call, so voice tasks keep Flex's own accept, which the
  // guard still checks against the channel.
  const { config } = settings;
  installFlexBridge(flex, manager, {
    baseUrl: config.bridgeUrl,
    whenBridgeUnreachable: config.whenBridgeUnreachable,
    notify: (message) => showBridgeError(flex, message),
    onError: (error) => console.warn('flex-bridge:', error),
  }).then(
    (handle) => store.set({ status: 'ready', handle }),
    (error: unknown) => {
      const reason = `flex-bridge could not start: ${error instanceof Error ? error.message : String(error)}`;
      console.error(reason);
      showBridgeError(flex, reason);
      store.set({ status: 'off', reason });
    },
  );
  return store;
}
