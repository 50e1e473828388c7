import { Server, DEMO } from "./harness.mjs";
const s = await new Server().start();
for (const u of [DEMO.doctor, DEMO.nurse]) {
  const tok = await s.token(u);
  for (const q of ["identifier=350102197211020037", "identifier=350102198503120018", "name=张伟", "name=王", "name=wang"]) {
    const r = await s.api("GET", "/fhir/R4/Patient?" + encodeURI(q), { token: tok });
    console.log(u.username, q, r.status, r.body.total, (r.body.entry||[]).map(e => e.resource.id + ":" + e.resource.name[0].text + ":" + JSON.stringify(e.resource.identifier.map(i=>i.value))));
  }
}
await s.stop();
