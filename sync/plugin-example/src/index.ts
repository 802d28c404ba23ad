/**
 * The bundle's entry point. Flex loads the bundle with a <script> tag; the bundle hands its
 * plugin class to Flex's plugin manager, which constructs it and calls `init(flex, manager)`.
 * (This is all that `loadPlugin` from `@twilio/flex-plugin` does.)
 */
import { FlexBridgePlugin } from './FlexBridgePlugin';

const flex = typeof window !== 'undefined' ? window.Twilio?.Flex : undefined;
if (flex?.Plugins) {
  flex.Plugins.init(FlexBridgePlugin);
} else {
  console.warn('flex-bridge example plugin: no Flex UI on this page (window.Twilio.Flex)');
}
