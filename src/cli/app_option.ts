/**
 * The `--app <module>` option every subcommand takes, and how it becomes an App.
 *
 * @module
 */
import { resolve } from "node:path";
import { Option } from "commander";
import { type App, AppError, loadApp } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";

/** The name `--app` takes for the built-in key-value store (also the default). */
export const KV_APP_NAME = "kv";

/** `--app <module>`, described the same way everywhere. */
export function appOption(): Option {
  return new Option(
    "--app <module>",
    `the service to replicate: an app module (path or file URL, see README "Your own app"), ` +
      `or "${KV_APP_NAME}" (the key-value store, the default)`,
  );
}

/** The app `--app` names: the key-value store when absent or "kv", else the module it loads. */
export function openApp(specifier: string | undefined): Promise<App> {
  if (specifier === undefined || specifier === KV_APP_NAME) return Promise.resolve(kvApp);
  return loadApp(specifier);
}

/**
 * `--app` for a child process run from another working directory: "kv" stays, a path becomes
 * absolute, a URL stays.
 */
export function absoluteAppSpecifier(specifier: string): string {
  if (specifier === KV_APP_NAME || /^[a-z][a-z0-9+.-]+:/i.test(specifier)) return specifier;
  return resolve(specifier);
}

/**
 * Runs `action` with the app, or prints the AppError's one line and returns exit code 2: a
 * module that cannot serve is a usage error, found before anything starts.
 */
export async function withApp(
  specifier: string | undefined,
  action: (app: App) => Promise<number> | number,
): Promise<number> {
  let app: App;
  try {
    app = await openApp(specifier);
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    console.error(error.message);
    return 2;
  }
  return await action(app);
}
