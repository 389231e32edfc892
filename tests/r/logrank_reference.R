# Log-rank references from R's survival package for tests/test_logrank_reference.py.
#
# Run from the repository root:  Rscript tests/r/logrank_reference.R
# It reads the synthetic cohorts beside it (cox_cases.csv, written by cox_reference.R; demo_survival.csv, the demo
# cohort's analysis table) and writes logrank.csv: survdiff(Surv(time, event) ~ grouping) per case, grouping
# (group: two groups; grade: three) and follow-up (full, or truncated at 183 days: later deaths censored there):
# chisq, df, p. Numbers are written with 17 significant digits. The data are synthetic.
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
g17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))

cases <- split(read.csv(file.path(here, "cox_cases.csv")), ~case)
demo <- read.csv(file.path(here, "demo_survival.csv"))
demo <- data.frame(time = demo$time_days, event = demo$event, group = demo$group, rpild = demo$rpild)
cases$demo <- demo
cases$demo_rpild <- demo[demo$rpild == 1, ]

rows <- list()
for (name in names(cases)) {
  for (grouping in c("group", "grade")) {
    data <- cases[[name]]
    if (!grouping %in% names(data)) next
    for (truncated_at in c(NA, 183)) {
      if (!is.na(truncated_at)) {
        data$event <- as.integer(data$event == 1 & data$time <= truncated_at)
        data$time <- pmin(data$time, truncated_at)
      }
      test <- survdiff(as.formula(paste("Surv(time, event) ~", grouping)), data = data)
      df <- sum(test$exp > 0) - 1
      rows[[length(rows) + 1]] <- data.frame(
        case = name, grouping = grouping, truncated_at = ifelse(is.na(truncated_at), "NA", truncated_at),
        chisq = g17(test$chisq), df = df, p = g17(pchisq(test$chisq, df, lower.tail = FALSE))
      )
    }
  }
}
write.csv(do.call(rbind, rows), file.path(here, "logrank.csv"), row.names = FALSE, quote = FALSE)
writeLines(paste(R.version.string, "; survival", packageVersion("survival")), file.path(here, "logrank_reference.version"))
