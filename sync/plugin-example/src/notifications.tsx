/**
 * The agent-facing errors of the bridge, shown with Flex's own Notifications: an accept that
 * did not happen, and why.
 */
import * as React from 'react';
import type * as Flex from '@twilio/flex-ui';

export const BRIDGE_ERROR = 'FlexBridgeError';

interface BridgeErrorContext {
  readonly message?: string;
}

/** Flex clones the element with `notificationContext`: the context given to showNotification. */
function BridgeErrorContent({ notificationContext }: Flex.NotificationContentProps): JSX.Element {
  const context = (notificationContext ?? {}) as BridgeErrorContext;
  return <span>{context.message ?? 'flex-bridge could not complete the action'}</span>;
}

export function registerNotifications(flex: typeof Flex): void {
  flex.Notifications.registerNotification({
    id: BRIDGE_ERROR,
    type: flex.NotificationType.error,
    content: <BridgeErrorContent />,
    closeButton: true,
    timeout: 10_000,
  });
}

export function showBridgeError(flex: typeof Flex, message: string): void {
  flex.Notifications.showNotification(BRIDGE_ERROR, { message });
}
