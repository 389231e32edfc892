# Competing-risks references from R's survival package for tests/test_competing.py.
#
# Run from the repository root:  Rscript tests/r/competing_reference.R
# It writes, beside itself, with 17 significant digits:
#   competing_cases.csv   the data (case, time, status: 0 censored, 1 death, 2 lung transplantation): seeded random
#                         cohorts, whole days (ties of every kind), synthetic
#   competing_curves.csv  survfit(Surv(time, factor(status, 0:2)) ~ 1, conf.type = ...) per case and conf.type at every
#                         time: n.risk, and per state (death, transplant) pstate, std.err, lower, upper
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))

set.seed(20261205)
cases <- list()
for (n in c(60, 300, 800)) {
  death <- ceiling(rexp(n, 0.004))
  transplant <- ceiling(rexp(n, 0.0006))
  censor <- sample(20:500, n, replace = TRUE)
  time <- pmin(death, transplant, censor)
  status <- ifelse(time == censor & censor < pmin(death, transplant), 0L, ifelse(death <= transplant, 1L, 2L))
  cases[[paste0("random_", n)]] <- data.frame(time, status)
}
# every kind of tie at one time: deaths, transplants and censorings on days 10 and 20
cases$ties <- data.frame(time = c(5, 10, 10, 10, 10, 10, 20, 20, 20, 20, 30, 40, 40),
                         status = c(1, 1, 1, 2, 0, 0, 2, 2, 1, 0, 1, 2, 0))
inputs <- do.call(rbind, lapply(names(cases), function(name) data.frame(case = name, cases[[name]])))
write.csv(inputs, file.path(here, "competing_cases.csv"), row.names = FALSE, quote = FALSE)

curves <- list()
for (name in names(cases)) {
  for (conf_type in c("log-log", "log", "plain")) {
    fit <- survfit(Surv(time, factor(status, 0:2)) ~ 1, data = cases[[name]], conf.type = conf_type)
    death <- match("1", fit$states)
    transplant <- match("2", fit$states)
    curves[[length(curves) + 1]] <- data.frame(
      case = name, conf_type = conf_type, time = fit$time, n_risk = fit$n.risk[, 1],
      death = g17(fit$pstate[, death]), death_std_err = g17(fit$std.err[, death]),
      death_lower = g17(fit$lower[, death]), death_upper = g17(fit$upper[, death]),
      transplant = g17(fit$pstate[, transplant]), transplant_std_err = g17(fit$std.err[, transplant]),
      transplant_lower = g17(fit$lower[, transplant]), transplant_upper = g17(fit$upper[, transplant])
    )
  }
}
write.csv(do.call(rbind, curves), file.path(here, "competing_curves.csv"), row.names = FALSE, quote = FALSE)
cat(R.version.string, "; survival", format(packageVersion("survival")), "\n",
    file = file.path(here, "competing_reference.version"))
