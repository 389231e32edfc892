// The web application's one script, served at /registry.js (the Content-Security-Policy allows no inline script).
// It hides the fields of a form that do not apply (data-applies: registry.entry.APPLIES) and disables them, so they
// are sent empty, and offers only the units of the chosen analyte (data-for). Without it every field shows, and the
// server refuses a value where it does not apply and a unit that is not the analyte's.
"use strict";

// A field's value as the server reads it: a missing-data code chosen beside an empty field is "[code]".
function fieldValue(name) {
  const input = document.getElementById(name);
  const code = document.getElementById(`missing.${name}`);
  if (!input || input.disabled) return "";
  return input.value.trim() || (code && code.value ? `[${code.value}]` : "");
}

function showWhatApplies() {
  for (const box of document.querySelectorAll("[data-applies]")) {
    const rule = JSON.parse(box.dataset.applies);
    const applies = rule.controls.every((name) => rule.values.includes(fieldValue(name)));
    box.hidden = !applies;
    const original = document.querySelector(`input[name="original.${box.dataset.field}"]`);
    for (const input of [...box.querySelectorAll("input, select, textarea"), original]) {
      if (input) input.disabled = !applies;
    }
  }
  for (const select of document.querySelectorAll("select[data-options-by]")) {
    const by = fieldValue(select.dataset.optionsBy);
    for (const option of select.querySelectorAll("option[data-for]")) {
      option.hidden = option.disabled = by !== "" && !option.dataset.for.split(" ").includes(by);
    }
    if (select.selectedOptions.length && select.selectedOptions[0].disabled) select.value = "";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showWhatApplies();
  document.addEventListener("input", showWhatApplies);
  document.addEventListener("change", showWhatApplies);
});
