// Type-level check against @twilio/flex-ui 2.x: Flex's own `flex` module object and Manager
// are what installFlexBridge takes, and Flex's insightsClient is a SyncClient it can watch.
import type * as Flex from '@twilio/flex-ui';

import { installFlexBridge } from '../../src/index.js';
import type { SyncClientLike } from '../../src/index.js';

export async function init(flex: typeof Flex, manager: Flex.Manager): Promise<void> {
  const insights: SyncClientLike = manager.insightsClient;
  const handle = await installFlexBridge(flex, manager, {
    baseUrl: 'https://bridge.example.com',
    syncClient: insights,
    whenBridgeUnreachable: 'refuse',
    routeAccept: (task) => task?.taskChannelUniqueName !== 'voice',
  });
  flex.Actions.addListener('beforeAcceptTask', (payload: Flex.ActionPayload) => {
    handle.decision(String(payload['sid']));
  });
  handle.close();
}
