// The data request form: the feasibility count follows the cohort criteria, purpose and sites
// as they are edited (the endpoint's URL comes from #feasibility's data-url; no inline script:
// the CSP forbids it). Loaded with defer.
(function () {
  "use strict";
  var form = document.getElementById("request-form");
  var shown = document.getElementById("feasibility");
  var problem = document.getElementById("feasibility-error");
  if (!form || !shown) { return; }
  var FIELDS = ["purpose", "cancer", "diagnosis_year_from", "diagnosis_year_to", "stage_groups",
                "chemotherapy", "sites"];
  var timer = null;
  var asked = 0;

  function query() {
    var params = new URLSearchParams();
    FIELDS.forEach(function (name) {
      form.querySelectorAll("[name='" + name + "']").forEach(function (input) {
        if (input.type === "checkbox") {
          if (input.checked) { params.append(name, input.value); }
        } else if (input.value) {
          params.append(name, input.value);
        }
      });
    });
    return params.toString();
  }

  function update() {
    var mine = ++asked;
    fetch(shown.dataset.url + "?" + query(),
          {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (mine !== asked) { return; }  // an older answer arriving late
        if (data.count !== undefined) {
          shown.textContent = data.count;
          problem.textContent = "";
        } else {
          problem.textContent = data.error || "";
        }
      })
      .catch(function () { /* the next change asks again */ });
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(update, 300);
  }

  FIELDS.forEach(function (name) {
    form.querySelectorAll("[name='" + name + "']").forEach(function (input) {
      input.addEventListener("input", later);
      input.addEventListener("change", later);
    });
  });
  update();
})();
