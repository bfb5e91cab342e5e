/** Builds bench/RESULTS.md: a machine description, then each benchmark's tables and notes. */
import { cpus, totalmem, platform, release, arch } from "node:os";

export class Report {
  private readonly lines: string[] = [];

  heading(text: string, level = 2): this {
    this.lines.push("", `${"#".repeat(level)} ${text}`, "");
    return this;
  }

  text(...paragraphs: string[]): this {
    for (const p of paragraphs) this.lines.push(p, "");
    return this;
  }

  table(headers: string[], rows: (string | number)[][]): this {
    this.lines.push(`| ${headers.join(" | ")} |`, `|${headers.map(() => "---").join("|")}|`);
    for (const row of rows) this.lines.push(`| ${row.join(" | ")} |`);
    this.lines.push("");
    return this;
  }

  toString(): string {
    return `${this.lines.join("\n").replace(/\n{3,}/g, "\n\n").trim()}\n`;
  }
}

export function machineDescription(): string[] {
  const cores = cpus();
  return [
    `- CPU: ${cores.length} × ${cores[0]?.model.trim() ?? "unknown"}`,
    `- Memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `- OS: ${platform()} ${release()} (${arch()})`,
    `- Node.js: ${process.version}`,
  ];
}
