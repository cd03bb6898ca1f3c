// An OpenID Provider shaped like HelseID, for the archive's OIDC tests.
//
// It is the OpenID Certified `oidc-provider` package, configured the way HelseID treats a client
// that signs users in: a confidential client authenticating with `private_key_jwt` only, PKCE
// (S256) required, pushed authorization requests (PAR) required, and the person's national ID and
// HPR number delivered in the ID token under HelseID's claim names. TLS with a certificate the test
// issued from its own CA, so the archive's `oidc_ca_file` is exercised.
//
// The login page is a plain form ("which test person are you?"), so a test can sign in with an
// HTTP client as a browser would: follow the redirects, post the form, follow the redirects back.
// Consent is given automatically (HelseID asks for no consent for these scopes either).
//
// Usage: node provider.mjs CONFIG.json
//   CONFIG: { "host", "tls": {"key", "cert"}, "client": {client_id, redirect_uris, jwks},
//             "accounts": {"<id>": {claims…}}, "acr" }
// The provider listens on a free port on `host` (loopback) and prints one line
// `READY <issuer>` when it accepts requests. It exits when its stdin closes, so it never outlives
// the test that started it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import process from 'node:process';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;

// The provider's own ID token signing key, new at every start.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'op-signing-1', use: 'sig', alg: 'RS256' };

const HELSEID_CLAIMS = {
  acr: null,
  auth_time: null,
  sid: null,
  openid: ['sub'],
  profile: ['name', 'given_name', 'family_name'],
  'helseid://scopes/identity/pid': ['helseid://claims/identity/pid'],
  'helseid://scopes/hpr/hpr_number': ['helseid://claims/hpr/hpr_number'],
  'helseid://scopes/identity/security_level': ['helseid://claims/identity/security_level'],
};

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

const server = https.createServer({
  key: readFileSync(config.tls.key),
  cert: readFileSync(config.tls.cert),
  minVersion: 'TLSv1.2',
});

server.listen(0, config.host, () => {
  const { port } = server.address();
  const hostname = config.hostname || config.host;
  const issuer = `https://${hostname}:${port}`;

  const provider = new Provider(issuer, {
    clients: [{
      ...config.client,
      token_endpoint_auth_method: 'private_key_jwt',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
      // The authentication level goes into every ID token, as HelseID's does.
      default_acr_values: [config.acr],
      // HelseID puts the session id (sid) in every ID token; oidc-provider does so for clients
      // registered for back-channel logout. The tests never sign out at the provider, so this
      // URI is never called.
      backchannel_logout_uri: new URL('/auth/oidc/backchannel-logout', config.client.redirect_uris[0]).href,
      backchannel_logout_session_required: true,
    }],
    clientAuthMethods: ['private_key_jwt'],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: HELSEID_CLAIMS,
    // HelseID puts the identity claims in the ID token, not only behind the userinfo endpoint.
    conformIdTokenClaims: false,
    acrValues: [config.acr],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
      backchannelLogout: { enabled: true },
    },
    async findAccount(ctx, id) {
      const person = accounts[id];
      if (!person) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...person }; } };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError(ctx, out) {
      ctx.type = 'text/plain; charset=utf-8';
      ctx.body = `${out.error}: ${out.error_description}`;
    },
  });
  const callback = provider.callback();

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction mismatch');
    const { prompt, params } = details;

    if (prompt.name === 'login' && req.method === 'GET' && !action) {
      const options = Object.keys(accounts).map((id) => `<option value="${escapeHtml(id)}">${escapeHtml(id)}</option>`);
      return send(res, 200, 'text/html; charset=utf-8', `<!doctype html><title>Test-ID</title>
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<select name="account">${options.join('')}</select><button>Log in</button></form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort"><button>Cancel</button></form>`);
    }
    if (action === 'abort' && req.method === 'POST') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
    }
    if (prompt.name === 'login' && action === 'login' && req.method === 'POST') {
      const form = await readForm(req);
      const accountId = form.get('account') || '';
      if (!accounts[accountId]) return send(res, 400, 'text/plain', 'unknown test person');
      return provider.interactionFinished(req, res, {
        login: { accountId, acr: config.acr, amr: ['test'] },
      }, { mergeWithLastSubmission: false });
    }
    if (prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return send(res, 400, 'text/plain', `unexpected ${req.method} for prompt ${prompt.name}`);
  }

  server.on('request', (req, res) => {
    const match = /^\/interaction\/([\w-]+)(?:\/(login|abort))?$/.exec(new URL(req.url, issuer).pathname);
    if (!match) return callback(req, res);
    return interaction(req, res, match[1], match[2]).catch((err) => {
      send(res, 400, 'text/plain', `interaction failed: ${err.message}`);
    });
  });

  process.stdout.write(`READY ${issuer}\n`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
