# Cox model references from R's survival package for tests/test_cox_reference.py.
#
# Run from the repository root:  Rscript tests/r/cox_reference.R
# It writes, beside itself:
#   cox_cases.csv   the data (case, time, event, group, age, male, ever_smoker, grade): seeded random cohorts
#   cox_terms.csv   coxph(Surv(time, event) ~ ..., ties = "efron") per case and model: coef, se, HR, 95% limits, Wald p
#   cox_zph.csv     cox.zph(fit, transform = "km") per case and model: chisq, df, p per term and GLOBAL
# Models: "unadjusted" (group only) and "adjusted" (group + age + male + ever_smoker + grade).
# Numbers are written with 17 significant digits. The data are synthetic.
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))

set.seed(20261203)
cases <- list()
for (n in c(61, 150, 400, 2000)) {
  group <- rbinom(n, 1, 0.45)  # 1 = tofacitinib
  age <- round(rnorm(n, 52, 11))
  male <- rbinom(n, 1, 0.35)
  ever_smoker <- rbinom(n, 1, 0.25)
  grade <- sample(1:3, n, replace = TRUE)
  hazard <- 0.004 * exp(-0.6 * group + 0.03 * (age - 52) + 0.3 * male + 0.4 * (grade - 2))
  death <- ceiling(rexp(n, hazard))
  censor <- sample(30:400, n, replace = TRUE)
  time <- pmin(death, censor, 365)  # whole days: ties
  event <- as.integer(death <= pmin(censor, 365))
  cases[[paste0("random_", n)]] <- data.frame(time, event, group, age, male, ever_smoker, grade)
}
inputs <- do.call(rbind, lapply(names(cases), function(name) data.frame(case = name, cases[[name]])))
write.csv(inputs, file.path(here, "cox_cases.csv"), row.names = FALSE, quote = FALSE)

models <- list(unadjusted = Surv(time, event) ~ group,
               adjusted = Surv(time, event) ~ group + age + male + ever_smoker + grade)
terms <- list(); zph <- list()
for (name in names(cases)) {
  for (model in names(models)) {
    fit <- coxph(models[[model]], data = cases[[name]], ties = "efron")
    s <- summary(fit)
    terms[[length(terms) + 1]] <- data.frame(
      case = name, model = model, term = rownames(s$coefficients), coef = g17(s$coefficients[, "coef"]),
      se = g17(s$coefficients[, "se(coef)"]), hr = g17(s$conf.int[, "exp(coef)"]),
      lower = g17(s$conf.int[, "lower .95"]), upper = g17(s$conf.int[, "upper .95"]),
      p = g17(s$coefficients[, "Pr(>|z|)"])
    )
    test <- cox.zph(fit, transform = "km")$table
    zph[[length(zph) + 1]] <- data.frame(
      case = name, model = model, term = rownames(test), chisq = g17(test[, "chisq"]), df = test[, "df"],
      p = g17(test[, "p"])
    )
  }
}
write.csv(do.call(rbind, terms), file.path(here, "cox_terms.csv"), row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, zph), file.path(here, "cox_zph.csv"), row.names = FALSE, quote = FALSE)
cat(R.version.string, "; survival", format(packageVersion("survival")), "\n",
    file = file.path(here, "cox_reference.version"))
