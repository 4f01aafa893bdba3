// Mints JWTs with the `jose` npm package, an implementation independent of pgwarden's, for
// the identity interoperability tests.
//
//   node mint.mjs '<claims JSON>' ALG [ALG...]
//
// For each ALG a fresh key pair is generated; prints one JSON document:
//   {"results":[{"alg":"ES256","kid":"jose-ES256","jwk":{public JWK},"token":"..."}]}
import * as jose from 'jose';

const [claimsJson, ...algs] = process.argv.slice(2);
if (!claimsJson || algs.length === 0) {
  console.error("usage: node mint.mjs '<claims JSON>' ALG [ALG...]");
  process.exit(2);
}
const claims = JSON.parse(claimsJson);

const results = [];
for (const alg of algs) {
  const options = { extractable: true };
  if (alg === 'EdDSA') options.crv = 'Ed25519';
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, options);
  const kid = `jose-${alg}`;
  const jwk = await jose.exportJWK(publicKey);
  jwk.kid = kid;
  jwk.use = 'sig';
  jwk.alg = alg;
  const token = await new jose.SignJWT(claims)
    .setProtectedHeader({ alg, kid, typ: 'JWT' })
    .sign(privateKey);
  results.push({ alg, kid, jwk, token });
}
process.stdout.write(JSON.stringify({ results }) + '\n');
