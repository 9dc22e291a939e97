// Drives headless Chromium with playwright-core for tests/BrowserTest.java; prints one JSON line
// {"event":"report",...} on stdout and exits 0, whatever the pages did (the Java test judges).
//
//   node tests/browser/load-page.mjs '<config JSON>'
//
// config: playwrightCore  the playwright-core package directory (tests/install-deps puts it outside
//                         the checkout, so it is imported by path: NODE_PATH does not apply to ESM)
//         chromium        the browser executable (Debian's /usr/bin/chromium)
//         tmpDir          where Chromium's throw-away profile goes (the test deletes it)
//         mode            "shared-link": open url, wait for the page's script, screenshot, follow the link
//                         "wrong-token": open url in a fresh context
//         url, screenshot
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(process.argv[2]);
process.env.TMPDIR = config.tmpDir; // playwright puts the profile under os.tmpdir()

const report = { event: 'report', mode: config.mode, steps: {}, responses: [], failed: [], console: [], errors: [] };
const print = () => process.stdout.write(JSON.stringify(report) + '\n');

// Never hang the test: report what we have and go.
setTimeout(() => {
  report.errors.push('load-page.mjs: gave up after 45 s');
  print();
  process.exit(3);
}, 45_000).unref();

const { chromium } = await import(pathToFileURL(path.join(config.playwrightCore, 'index.mjs')).href);

// Flags as recommended for this machine: no sandbox as root, and no background connections
// (the network is closed; Chromium would keep trying).
const browser = await chromium.launch({
  executablePath: config.chromium,
  headless: true,
  timeout: 30_000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
report.browserVersion = browser.version();

/** A step's own failure goes into the report, so that later steps still run. */
async function step(name, fn) {
  try {
    report.steps[name] = await fn();
  } catch (e) {
    report.steps[name] = { error: String(e && e.message || e) };
  }
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('response', r => report.responses.push({ url: r.url(), status: r.status() }));
  page.on('requestfailed', r => report.failed.push({ url: r.url(), error: r.failure() && r.failure().errorText }));
  page.on('console', m => report.console.push(m.type() + ': ' + m.text()));
  page.on('pageerror', e => report.errors.push('pageerror: ' + e.message));
  return { context, page };
}

/** The navigation's redirect chain, first hop first, with the Location and Set-Cookie headers of each. */
async function chain(response) {
  const hops = [];
  for (let req = response.request().redirectedFrom(); req; req = req.redirectedFrom()) {
    const r = await req.response();
    const h = r ? await r.allHeaders() : {};
    hops.unshift({ url: req.url(), status: r && r.status(), location: h['location'] ?? null, setCookie: h['set-cookie'] ?? null });
  }
  return hops;
}

try {
  if (config.mode === 'shared-link') {
    const { context, page } = await newPage();
    await step('open', async () => {
      const response = await page.goto(config.url, { waitUntil: 'load' });
      const redirects = await chain(response);
      let done = true;
      try {
        await page.waitForFunction(() => window.arpResults !== undefined, null, { timeout: 10_000 });
      } catch (e) {
        done = false;
      }
      return {
        status: response.status(), redirects, url: page.url(), done, title: await page.title(),
        heading: await page.textContent('#title'), statusText: await page.textContent('#status'),
        results: await page.evaluate(() => window.arpResults ?? null),
      };
    });
    await step('cookies', async () => context.cookies());
    await step('screenshot', async () => {
      await page.screenshot({ path: config.screenshot, fullPage: true });
      return { path: config.screenshot };
    });
    await step('link', async () => {
      await Promise.all([page.waitForURL('**/page2.html', { waitUntil: 'load' }), page.click('#next')]);
      return { url: page.url(), title: await page.title(), heading: await page.textContent('#title') };
    });
  } else if (config.mode === 'wrong-token') {
    const { context, page } = await newPage();
    await step('open', async () => {
      const response = await page.goto(config.url, { waitUntil: 'load' });
      const h = await response.allHeaders();
      return { status: response.status(), url: page.url(), setCookie: h['set-cookie'] ?? null, redirects: await chain(response) };
    });
    await step('cookies', async () => context.cookies());
  } else {
    report.errors.push('unknown mode ' + config.mode);
  }
} finally {
  await browser.close().catch(e => report.errors.push('close: ' + e.message));
}
print();
process.exit(0);
