// The explorer page in a real headless Chromium (run by browser-test.sh):
// search, neighbourhood drawn with edge groups and the identity cluster,
// click to expand, no request to any other origin, no script errors.
// Then the same page on a server that needs a token: it asks for one.
//   node scripts/browser-test.mjs URL CHROMIUM OUTDIR AUTH_URL
// (AUTH_URL serves with the token `browser-test-token`.)
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.cwd(), process.argv[4], 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');

const [base, executablePath, out, authBase] = process.argv.slice(2);
let passed = 0;
let failed = 0;

const context = await chromium.launchPersistentContext(path.join(out, 'profile'), {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = context.pages()[0] || await context.newPage();
const foreign = [];
await context.route('**/*', (route) => {
  const u = route.request().url();
  if (u.startsWith(base + '/') || (authBase && u.startsWith(authBase + '/'))) return route.continue();
  foreign.push(u);
  return route.abort();
});
const problems = [];
page.on('pageerror', (e) => problems.push('page error: ' + e.message));
page.on('console', (m) => { if (m.type() === 'error') problems.push('console error: ' + m.text()); });

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log('ok - ' + name);
  } catch (e) {
    failed += 1;
    console.log('not ok - ' + name + ': ' + (e && e.message ? e.message.split('\n')[0] : e));
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
const idle = () => page.waitForSelector('body[data-state="idle"]', { timeout: 10000 });
const nodeCount = () => page.locator('#graph g.node').count();

await check('the page loads from rdg itself', async () => {
  const resp = await page.goto(base + '/', { waitUntil: 'load' });
  assert(resp && resp.status() === 200, 'status ' + (resp && resp.status()));
  assert((await page.title()) === 'rdg explorer', 'title ' + (await page.title()));
  await idle();
});

await check('typing suggests identifiers (search)', async () => {
  await page.fill('#q', 'account:acc1');
  await page.waitForFunction(() => document.querySelectorAll('#suggestions option').length > 0, null, { timeout: 10000 });
});

await check('a search draws the neighbourhood with edge groups and the identity cluster', async () => {
  await page.fill('#q', 'account:acc1');
  await page.click('#go');
  await page.waitForSelector('#graph g.node[data-id="account:acc1"].expanded', { timeout: 10000 });
  await idle();
  const n = await nodeCount();
  assert(n >= 3, 'only ' + n + ' nodes drawn');
  const edges = await page.locator('#graph .edge').count();
  assert(edges >= n - 1, edges + ' edges for ' + n + ' nodes');
  assert((await page.textContent('#panel h2')) === 'account:acc1', 'panel title');
  const groups = await page.locator('#panel .group').evaluateAll((gs) => gs.map((g) => g.dataset.edgeType));
  assert(groups.includes('has_profile'), 'groups: ' + groups.join(','));
  const members = await page.locator('#cluster li').count();
  assert(members >= 2, members + ' cluster members listed');
  assert(await page.locator('#graph .edge.identity').count() >= 1, 'no identity link drawn');
  const fresh = await page.textContent('#fresh');
  assert(/commit \d+/.test(fresh), 'freshness: ' + fresh);
});

await check('clicking a neighbour expands it', async () => {
  const before = await nodeCount();
  const profile = page.locator('#graph g.node[data-id^="profile:"]').first();
  const id = await profile.getAttribute('data-id');
  await profile.locator('circle').click({ timeout: 10000 });
  await page.waitForSelector(`#graph g.node[data-id="${id}"].expanded`, { timeout: 10000 });
  await idle();
  const after = await nodeCount();
  assert(after > before, `nodes ${before} -> ${after}`);
  assert((await page.textContent('#panel h2')) === id, 'panel shows ' + id);
  const groups = await page.locator('#panel .group').evaluateAll((gs) => gs.map((g) => g.dataset.edgeType));
  assert(groups.includes('watched'), 'groups: ' + groups.join(','));
});

await check('a link in the side panel expands that node too', async () => {
  const link = page.locator('#panel .group[data-edge-type="watched"] a').first();
  const id = await link.getAttribute('data-id', { timeout: 10000 });
  await link.click({ timeout: 10000 });
  await page.waitForSelector(`#graph g.node[data-id="${id}"].expanded`, { timeout: 10000 });
  await idle();
  assert((await page.textContent('#panel h2')) === id, 'panel shows ' + id);
});

// The picture a person would look at: two expansions, side panel filled.
await page.screenshot({ path: path.join(out, 'explorer.png') });

await check('an unknown identifier shows an error, not a broken page', async () => {
  await page.fill('#q', 'account:no-such-account');
  await page.click('#go');
  await idle();
  await page.waitForSelector('#error:not([hidden])', { timeout: 10000 });
  const n = await nodeCount();
  assert(n > 0, 'the graph was lost');
});

await check('with a token-protected server, the page asks for the token and then works', async () => {
  assert(authBase, 'no AUTH_URL given');
  // The 401 of the first call is logged by the browser as a console error:
  // expected here, so it is not counted as a problem.
  const before = problems.length;
  await page.goto(authBase + '/#account:acc1', { waitUntil: 'load' });
  await page.waitForSelector('#auth:not([hidden])', { timeout: 10000 });
  await page.fill('#token', 'browser-test-token');
  await page.click('#auth-form button');
  await page.waitForSelector('#graph g.node[data-id="account:acc1"].expanded', { timeout: 10000 });
  await idle();
  problems.splice(before).filter((p) => !/401/.test(p)).forEach((p) => problems.push(p));
});

await check('nothing was fetched from another origin and no script failed', async () => {
  assert(foreign.length === 0, 'foreign requests: ' + foreign.join(', '));
  assert(problems.length === 0, problems.join('; '));
});

if (failed) await page.screenshot({ path: path.join(out, 'failure.png') });
console.log('screenshots: ' + path.join(out, failed ? 'failure.png' : 'explorer.png'));
await context.close();
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
