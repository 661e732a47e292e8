// What the Mailpit client tests share: free loopback ports and waiting for a listener.
import net from "node:net";

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// Resolves once `port` accepts a connection; fails when `child` exits first or after 15 s.
export async function waitPort(port, child) {
  const end = Date.now() + 15_000;
  while (Date.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`process exited (${child.signalCode || `code ${child.exitCode}`})`);
    }
    const ok = await new Promise((res) => {
      const c = net.connect(port, "127.0.0.1", () => { c.end(); res(true); });
      c.on("error", () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing on ${port}`);
}
