// The entry point of every page: highlights the nav and renders the page's
// module (its name is in <body data-page>).

import { errorPanel, h, clear } from './dom.js';
import { tokenCookies } from './api.js';

tokenCookies(); // a token given before this page, for links and images

const page = document.body.dataset.page;
for (const a of document.querySelectorAll('nav a[data-nav]')) {
  if (a.dataset.nav.split(' ').includes(page)) a.setAttribute('aria-current', 'page');
}

const main = document.getElementById('main');
try {
  const mod = await import(`./pages/${page}.js`);
  await mod.render(main);
} catch (e) {
  console.error(e);
  clear(main, h('h1', {}, 'Something went wrong'), errorPanel(e));
}
document.body.dataset.ready = 'true';
