// Renders the expression templates that dashboards/build_mixin.py writes into the generated files.
{
  // template: a PromQL expression (or Grafana query) whose selectors carry %(mailflowSelector)s or
  // %(jobSelector)s and whose thresholds are %(<field>)s; config: the mixin's _config.
  // While mailflowSelector is empty its placeholder goes with its comma or its braces, so
  // m{%(mailflowSelector)s, a="b"} renders m{a="b"} and m{%(mailflowSelector)s} renders m.
  expr(template, config)::
    local bare =
      if config.mailflowSelector == '' then
        std.strReplace(std.strReplace(template, '{%(mailflowSelector)s, ', '{'), '{%(mailflowSelector)s}', '')
      else template;
    bare % config,
}
