;;; docs_snippet.el --- docs/editors/emacs.md's set-up, run as written in a real Emacs -*- lexical-binding: t -*-

;; The elisp block of docs/editors/emacs.md is evaluated in a batch Emacs with Debian's eglot,
;; a Python file of the demo project is opened and `M-x eglot' started as the page says. Then
;; the whole demo mission runs through the server alone: the backlog command, the gate prompts
;; answered in the minibuffer (Approve, Accept), the review's finding as a Flymake diagnostic
;; with its assertion id, and the handoff in the hover.
;;
;; Run by scripts/test with `missions' on PATH:
;;   MISSIONS_DEMO=<a `missions demo --prepare' directory> emacs --batch -Q -l docs_snippet.el

(require 'package)
;; Debian's elpa-eglot lives in the system's package directory, which `-Q' leaves out.
(add-to-list 'package-directory-list "/usr/share/emacs/site-lisp/elpa")
(package-initialize)
(require 'eglot)
(require 'cl-lib)
(require 'subr-x)

(defun missions-test-fail (format-string &rest args)
  (princ (concat "FAILED: " (apply #'format format-string args) "\n") #'external-debugging-output)
  (kill-emacs 1))

(defun missions-test-wait (what predicate &optional seconds)
  "Waits up to SECONDS (60) for PREDICATE, serving the server meanwhile; fails saying WHAT."
  (let ((deadline (+ (float-time) (or seconds 60))))
    (while (not (funcall predicate))
      (when (> (float-time) deadline)
        (missions-test-fail "timed out waiting for %s" what))
      (accept-process-output nil 0.05))))

(defvar missions-test-demo (or (getenv "MISSIONS_DEMO") (missions-test-fail "MISSIONS_DEMO is not set")))
(defvar missions-test-page
  (expand-file-name "../../../docs/editors/emacs.md" (file-name-directory load-file-name)))

;; The page's first elisp block, evaluated as a user's init file would.
(with-temp-buffer
  (insert-file-contents missions-test-page)
  (goto-char (point-min))
  (unless (re-search-forward "^```elisp\n\\(\\(?:.\\|\n\\)*?\n\\)```" nil t)
    (missions-test-fail "no elisp block in %s" missions-test-page))
  (let ((snippet (match-string 1)))
    (with-temp-buffer
      (insert snippet)
      (eval-buffer))))

;; The user answers gate prompts in the minibuffer: Approve, then Accept at each milestone.
(defvar missions-test-asked nil)
(advice-add #'completing-read :around
            (lambda (_original prompt collection &rest _)
              (let ((choices (all-completions "" collection)))
                (push (cons prompt choices) missions-test-asked)
                (or (cl-find-if (lambda (c) (member c '("Approve" "Accept"))) choices) ""))))
;; Eglot asks before some actions in batch mode; a user would say yes.
(fset 'yes-or-no-p (lambda (&rest _) t))
(fset 'y-or-n-p (lambda (&rest _) t))

(find-file (expand-file-name "textkit/core.py" missions-test-demo))
(call-interactively #'eglot)
(missions-test-wait "the server to start" (lambda () (eglot-current-server)))
(defvar missions-test-server (eglot-current-server))

(defun missions-test-command (command argument)
  (jsonrpc-request missions-test-server :workspace/executeCommand
                   (list :command command :arguments (vector argument))))

;; `missions.backlog' with an empty object argument.
(let* ((items (missions-test-command "missions.backlog" (make-hash-table)))
       (ids (mapcar (lambda (item) (plist-get item :id)) items)))
  (unless (member "BACKLOG.md:3" ids)
    (missions-test-fail "the backlog lacks BACKLOG.md:3: %S" items)))

(defvar missions-test-id
  (plist-get (missions-test-command "missions.start" (list :itemId "BACKLOG.md:3")) :missionId))

(defun missions-test-state ()
  (plist-get (missions-test-command "missions.status" (list :missionId missions-test-id)) :state))

(missions-test-wait "the mission to complete through the prompts"
                    (lambda () (equal (missions-test-state) "completed"))
                    120)
(unless (cl-some (lambda (asked) (member "Approve" (cdr asked))) missions-test-asked)
  (missions-test-fail "the plan gate was never asked: %S" missions-test-asked))

;; The review's warning stays open: a Flymake diagnostic beginning with its assertion id.
(find-file (expand-file-name "textkit/slug.py" missions-test-demo))
(unless (eq (eglot-current-server) missions-test-server)
  (missions-test-fail "textkit/slug.py is not served by the same server"))
;; Flymake starts its backends on an idle timer, which a batch Emacs never reaches: start it.
(missions-test-wait "the finding's diagnostic in textkit/slug.py"
                    (lambda ()
                      (flymake-start)
                      (cl-some (lambda (d)
                                 (string-match-p "A2: The docstring's example" (flymake-diagnostic-text d)))
                               (flymake-diagnostics))))

;; The hover on a line the mission wrote shows the handoff.
(let* ((hover (jsonrpc-request missions-test-server :textDocument/hover
                               (list :textDocument (eglot--TextDocumentIdentifier)
                                     :position (list :line 4 :character 0))))
       (text (plist-get (plist-get hover :contents) :value)))
  (unless (and text (string-match-p "Missions" text) (string-match-p missions-test-id text))
    (missions-test-fail "the hover does not show the handoff: %S" hover)))

(eglot-shutdown missions-test-server)
(princ (format "ok: docs/editors/emacs.md's set-up drove mission %s in Emacs %s with eglot\n"
               missions-test-id emacs-version))
(kill-emacs 0)

;;; docs_snippet.el ends here
