// The page for an address the UI does not have.

import { h, clear } from '../dom.js';

export function render(main) {
  clear(main, h('h1', {}, 'Page not found'),
    h('p', {}, 'There is no page at ', h('code', {}, location.pathname), '. Try ', h('a', { href: '/runs' }, 'the flow runs'), ' or ',
      h('a', { href: '/deployments' }, 'the deployments'), '.'));
}
