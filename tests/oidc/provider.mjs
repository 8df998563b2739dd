// A real OpenID Provider for Runcast's sign-in tests: oidc-provider (a certified implementation) with its built-in
// dev login and consent pages, test people whose groups map to Runcast's roles, the device flow, and PKCE.
//
//   node provider.mjs '{"port": 0, "redirect_uris": ["http://127.0.0.1:PORT/auth/callback"], "secret": "..."}'
//
// Prints one line of JSON once it listens: {"issuer": ..., "port": ...}. Any login name from PEOPLE signs in (any
// password). POST /__test/next-id-token {"mode": "expired" | "wrong-aud"} makes the next ID token the token endpoint
// hands out expired or for another client, re-signed with the provider's own key: what a broken or hostile provider
// (or a token replayed from another app) looks like, so the hub's checks of a real, well-signed token are tested.
import { createServer } from "node:http";
import * as jose from "jose";
import Provider from "oidc-provider";

const config = JSON.parse(process.argv[2] || "{}");
const port = config.port || 0;

const PEOPLE = {
  dana: { name: "Dana Admin", email: "dana@example.test", groups: ["ops"] },
  alex: { name: "Alex Approver", email: "alex@example.test", groups: ["oncall", "eng"] },
  vic: { name: "Vic Viewer", email: "vic@example.test", groups: ["eng"] },
  nora: { name: "Nora Nogroup", email: "nora@example.test", groups: ["marketing"] },
};

const { privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: "test-rsa-1", alg: "RS256", use: "sig" };

// a free port first, so the issuer (which names the port) is known before the provider is made
const server = createServer();
await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "runcast",
      client_secret: config.secret || "runcast-test-client-secret",
      redirect_uris: config.redirect_uris || [],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
    {
      // the terminal (runcast login): a public client, device flow or a loopback redirect
      client_id: "runcast-cli",
      application_type: "native", // a loopback redirect on any port (RFC 8252), for `runcast login --method browser`
      token_endpoint_auth_method: "none",
      grant_types: ["urn:ietf:params:oauth:grant-type:device_code", "authorization_code"],
      response_types: ["code"],
      redirect_uris: ["http://127.0.0.1/callback"],
    },
  ],
  jwks: { keys: [signingJwk] },
  async findAccount(ctx, id) {
    const person = PEOPLE[id];
    if (!person) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...person }; } };
  },
  claims: { openid: ["sub"], profile: ["name", "groups"], email: ["email"] },
  conformIdTokenClaims: false, // the profile's claims (groups) in the ID token itself, as Okta and Entra ID can do
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
  },
  pkce: { required: () => true },
  cookies: { keys: ["runcast-test-cookie-key-0123456789"] },
  ttl: { IdToken: 600, AccessToken: 600, DeviceCode: 600, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.on("server_error", (ctx, err) => console.error("provider server_error", err));

let nextMode = null;
provider.use(async (ctx, next) => {
  if (ctx.path === "/__test/next-id-token" && ctx.method === "POST") {
    const chunks = [];
    for await (const c of ctx.req) chunks.push(c);
    nextMode = JSON.parse(Buffer.concat(chunks).toString() || "{}").mode || null;
    ctx.body = { mode: nextMode };
    return;
  }
  await next();
  if (ctx.path === "/token" && nextMode && ctx.status === 200 && ctx.body?.id_token) {
    const claims = jose.decodeJwt(ctx.body.id_token);
    const now = Math.floor(Date.now() / 1000);
    if (nextMode === "expired") Object.assign(claims, { iat: now - 3600, exp: now - 1800 });
    if (nextMode === "wrong-aud") claims.aud = "another-app";
    ctx.body.id_token = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: signingJwk.kid })
      .sign(privateKey);
    nextMode = null;
  }
});

server.on("request", provider.callback());
console.log(JSON.stringify({ issuer, port: server.address().port }));
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => { server.close(); process.exit(0); });
