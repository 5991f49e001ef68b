// Suggestions for local words, CTCAE grade definitions and the lab's canonical value.
(function () {
  "use strict";
  function debounce(fn, ms) {
    let t;
    return function () { clearTimeout(t); const a = arguments; t = setTimeout(() => fn.apply(this, a), ms); };
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then((r) => r.json());
  }
  document.querySelectorAll("input[data-suggest]").forEach(function (input) {
    const domain = input.dataset.suggest;
    let list = document.getElementById("suggest-" + domain);
    if (!list) {
      list = document.createElement("datalist");
      list.id = "suggest-" + domain;
      document.body.appendChild(list);
    }
    input.addEventListener("input", debounce(function () {
      if (!input.value.trim()) return;
      getJSON("/terms/suggest?domain=" + encodeURIComponent(domain) + "&q=" + encodeURIComponent(input.value))
        .then(function (data) {
          list.replaceChildren();
          data.results.forEach(function (item) {
            const option = document.createElement("option");
            option.value = item.value;
            option.label = item.label;
            option.textContent = item.label;
            list.appendChild(option);
          });
        });
    }, 200));
  });
  const term = document.getElementById("id_term");
  const gradeHelp = document.getElementById("grade-help");
  if (term && gradeHelp) {
    const show = debounce(function () {
      getJSON("/terms/grades?term=" + encodeURIComponent(term.value)).then(function (data) {
        gradeHelp.replaceChildren();
        if (!data.term) return;
        const title = document.createElement("strong");
        title.textContent = data.term + " " + (data.name_zh || "");
        gradeHelp.appendChild(title);
        const ul = document.createElement("ul");
        Object.entries(data.grades).forEach(function ([grade, text]) {
          const li = document.createElement("li");
          li.textContent = "G" + grade + ": " + text;
          ul.appendChild(li);
        });
        gradeHelp.appendChild(ul);
        const select = document.getElementById("id_grade");
        if (select) {
          Array.from(select.options).forEach(function (o) { o.disabled = !(o.value in data.grades); });
        }
      });
    }, 200);
    term.addEventListener("input", show);
    if (term.value) show();
  }
  const preview = document.getElementById("lab-preview");
  if (preview) {
    const fields = ["id_test", "id_value", "id_unit"].map((id) => document.getElementById(id));
    const update = debounce(function () {
      const [test, value, unit] = fields.map((f) => f.value);
      if (!test || !value) return;
      getJSON("/terms/lab-preview?test=" + encodeURIComponent(test) + "&value=" + encodeURIComponent(value) + "&unit=" + encodeURIComponent(unit))
        .then(function (data) {
          let text = data.error || (data.canonical ? "= " + data.canonical : (data.note || ""));
          if (data.proposed) text += " · CTCAE: " + data.proposed.term + " G" + data.proposed.grade;
          preview.textContent = text;
        });
    }, 250);
    fields.forEach((f) => f && f.addEventListener("input", update));
  }
})();
